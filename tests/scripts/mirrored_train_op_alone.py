"""Raw graph code under MirroredStrategy (2 logical CPUs), batch size fixed
at build time: `session.run(train_op)` alone moves every copy of the table
once per run, by the rule on the global batch.

Run by tests/graph_mode/test_ties.py in a subprocess (logical devices must
be set before TensorFlow initialises). Prints one RESULT line.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference
import reference  # noqa: E402

import cl  # noqa: E402

C, D_IN, D, B, STEPS = 6, 4, 3, 4, 3  # B per replica, static


def main(kind):
    strategy = {"v2": tf.distribute.MirroredStrategy,
                "v1": tf.compat.v1.distribute.MirroredStrategy}[kind](["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    weights_value = rng.normal(size=(D_IN, D)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        images = [tf.compat.v1.placeholder(tf.float32, [B, D_IN]) for _ in range(2)]
        labels = [tf.compat.v1.placeholder(tf.int64, [B]) for _ in range(2)]

        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            pick = lambda pair: tf.cond(tf.equal(replica, 0), lambda: pair[0], lambda: pair[1])  # noqa: E731
            image, label = tf.ensure_shape(pick(images), [B, D_IN]), tf.ensure_shape(pick(labels), [B])
            weights = tf.compat.v1.get_variable("w", initializer=weights_value)
            loss = tf.reduce_mean(cl.center_loss(label, tf.matmul(image, weights),
                                                 alpha=0.5, num_classes=C))
            return tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)

        with strategy.scope():
            run = strategy.run if kind == "v2" else strategy.extended.call_for_each_replica
            train_op = strategy.group(run(replica_fn))
            table = cl.get_centers()
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((C, D))
    deviation, copies_equal = 0.0, True
    for _ in range(STEPS):
        y = [rng.integers(0, C, B) for _ in range(2)]
        x = [rng.normal(size=(B, D_IN)).astype(np.float32) for _ in range(2)]
        session.run(train_op, dict(zip(images + labels, x + y)))
        expected = reference.update_centers(np.concatenate(y), np.concatenate(x) @ weights_value,
                                            expected, 0.5)
        copies = session.run(list(table.values))
        copies_equal &= all(np.array_equal(copies[0], c) for c in copies[1:])
        deviation = max(deviation, float(np.abs(copies[0] - expected).max()))
    return {"deviation": deviation, "copies_equal": bool(copies_equal),
            "moved": float(np.abs(expected).max())}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[2])), flush=True)
    os._exit(0)  # see tests/graph_mode/test_replicas.py: never close the session
