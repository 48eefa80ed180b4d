"""Raw graph code under MultiWorkerMirroredStrategy, one worker of 2 (one
replica each): after every step both workers' tables are bitwise equal and
follow the paper's rule on the global batch; each worker's loss uses the
pre-update centers.

Run by tests/graph_mode/test_replicas.py as 2 processes on 127.0.0.1; argv:
task index, comma-separated ports, the tests/support folder. Prints one RESULT line.
"""

import hashlib
import json
import sys

import numpy as np

sys.path.insert(0, sys.argv[3])  # tests/support: the numpy reference, the script helpers
from multi_worker import join_cluster  # noqa: E402
from replica_batches import step_batches  # noqa: E402

task = join_cluster(sys.argv)  # TF_CONFIG: before TensorFlow starts

import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()
import reference  # noqa: E402

import cl  # noqa: E402

C, D, STEPS = 10, 3, 24


def main():
    strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
    config = strategy.update_config_proto(tf.compat.v1.ConfigProto())
    config.operation_timeout_in_ms = 60000
    server = tf.distribute.Server(strategy.cluster_resolver.cluster_spec(), job_name="worker",
                                  task_index=task, config=config, start=True)
    labels = tf.compat.v1.placeholder(tf.int32, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, D])
    with strategy.scope():
        loss = strategy.extended.call_for_each_replica(
            lambda: cl.center_loss(labels, features, alpha=0.5, num_classes=C))
        loss = strategy.experimental_local_results(loss)[0]
        table = strategy.experimental_local_results(cl.get_centers())[0]
    session = tf.compat.v1.Session(server.target, config=config)
    session.run(tf.compat.v1.global_variables_initializer())
    rng = np.random.default_rng(0)
    expected = np.zeros((C, D))
    report = dict(replicas=strategy.num_replicas_in_sync, hashes=[], center_dev=0.0, loss_dev=0.0)
    for step in range(STEPS):
        y, x, _ = step_batches(rng, step, D)
        got = session.run(loss, {labels: y[task], features: x[task]})
        want = reference.center_loss(y[task], x[task], expected)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        report["loss_dev"] = max(report["loss_dev"], float(np.nanmax(np.abs(got - want), initial=0.0)))
        expected = reference.update_centers(np.concatenate(y), np.concatenate(x), expected, 0.5)
        centers = session.run(table)
        report["hashes"].append(hashlib.sha256(centers.tobytes()).hexdigest())
        report["center_dev"] = max(report["center_dev"], float(np.abs(centers - expected).max()))
    # Printed while the session and the server are still alive.
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
