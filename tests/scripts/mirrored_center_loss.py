"""Raw graph code under MirroredStrategy (both classes, 2 logical CPUs):
every copy of the table follows the paper's rule on the global batch, the
losses use the pre-update centers, training=False freezes the table, no op
reads a whole copy; and the cases that cannot be exact are refused.

Run by tests/graph_mode/test_replicas.py in a subprocess (logical devices must
be set before TensorFlow initialises); argv: the tests/support folder. Prints one
RESULT line.
"""

import json
import sys

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference, the script helpers
import reference  # noqa: E402
import replica_batches  # noqa: E402
import update_ops  # noqa: E402

import cl  # noqa: E402

C, D, STEPS = 10, 3, 24
# The shared sizes, then steps where the largest batch changes.
SIZES = replica_batches.SIZES + [(7, 2), (1, 1)]
STRATEGIES = {"v2": tf.distribute.MirroredStrategy, "v1": tf.compat.v1.distribute.MirroredStrategy}


def per_replica(values):
    # Each replica picks its own placeholder by replica id.
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.cond(tf.equal(replica, 0), lambda: values[0], lambda: values[1])


def dense_reads(graph, tables):
    # Reads of a whole copy that some op consumes (each variable also makes an
    # unconsumed "Read" op at creation, which never runs unless fetched).
    handles = {copy.handle.op.name for table in tables for copy in table.values}
    return sum(op.type == "ReadVariableOp" and op.inputs[0].op.name in handles
               and bool(op.outputs[0].consumers()) for op in graph.get_operations())


def scenario(kind):
    strategy = STRATEGIES[kind](["/cpu:0", "/cpu:1"])
    graph = tf.Graph()
    with graph.as_default():
        labels = [tf.compat.v1.placeholder(tf.int32, [None]) for _ in range(2)]
        features = [tf.compat.v1.placeholder(tf.float32, [None, D]) for _ in range(2)]
        weights = [tf.compat.v1.placeholder(tf.float32, [None]) for _ in range(2)]
        training = tf.compat.v1.placeholder_with_default(True, [])

        def replica_fn():
            y, x, w = per_replica(labels), per_replica(features), per_replica(weights)
            plain = cl.center_loss(y, x, alpha=0.5, num_classes=C, training=training)
            weighted = cl.center_loss(y, x, alpha=0.5, num_classes=C, name="weighted",
                                      sample_weight=w)
            return plain, weighted

        with strategy.scope():
            run = strategy.run if kind == "v2" else strategy.extended.call_for_each_replica
            plain, weighted = run(replica_fn)
            tables = [cl.get_centers(), cl.get_centers("weighted")]
            reads = dense_reads(graph, tables)
            # (the plain table's update is in a cond branch, another graph)
            built = update_ops.counts(graph.get_operations(), "weighted/")
            losses = [strategy.experimental_local_results(t) for t in (plain, weighted)]
            rng = np.random.default_rng(0)
            start = rng.normal(size=(C, D)).astype(np.float32)
            assign = [table.assign(start) for table in tables]
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(assign)
    expected = [start.astype(np.float64)] * 2
    report = dict(dense_reads=reads, update_ops=built, one_update=update_ops.one_update(),
                  aggregation=tables[0].aggregation.name,
                  copies_equal=True, center_dev=0.0, loss_dev=0.0, frozen_when_off=True,
                  untouched_rows_equal=True)
    last = start
    for step in range(STEPS):
        y, x, w = replica_batches.step_batches(rng, step, D, SIZES)
        on = step % 5 != 4
        feed = {training: on}
        feed.update(zip(labels + features + weights, y + x + w))
        got = session.run(losses, feed)
        gy, gx, gw = np.concatenate(y), np.concatenate(x), np.concatenate(w)
        for t in range(2):
            # Each replica's loss is from the pre-update centers.
            got_loss = np.concatenate(got[t])
            want_loss = reference.center_loss(gy, gx, expected[t])
            assert np.array_equal(np.isnan(got_loss), np.isnan(want_loss))
            report["loss_dev"] = max(report["loss_dev"], float(
                np.nanmax(np.abs(got_loss - want_loss), initial=0.0)))
        if on:
            expected[0] = reference.update_centers(gy, gx, expected[0], 0.5)
        expected[1] = reference.update_centers(gy, gx, expected[1], 0.5, gw)
        for t, table in enumerate(tables):
            copies = session.run(list(table.values))
            report["copies_equal"] &= all(np.array_equal(copies[0], c) for c in copies[1:])
            report["center_dev"] = max(report["center_dev"], float(np.abs(copies[0] - expected[t]).max()))
            report["untouched_rows_equal"] &= bool(np.array_equal(copies[0][8:], start[8:]))
            if t == 0 and not on:
                report["frozen_when_off"] &= bool(np.array_equal(copies[0], last))
            if t == 0:
                last = copies[0]
    return report


def error_of(build):
    try:
        build()
    except Exception as error:  # reported, not raised: the test shows it
        return f"{type(error).__name__}: {error}"
    return None


def errors():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def loss(**kwargs):
        # The strategy scope belongs to the graph: build the inputs in it.
        return cl.center_loss(tf.constant([1, 2]), tf.ones([2, D]), 0.5, C, **kwargs)

    found = {}
    with tf.Graph().as_default():
        with strategy.scope():
            found["cross_replica"] = error_of(loss)
            # Read-only loss in cross-replica context: allowed.
            found["cross_replica_read_only"] = error_of(lambda: loss(name="read", training=False))
    with tf.Graph().as_default():
        plain = tf.compat.v1.get_variable("plain", [C, D], trainable=False)
        with strategy.scope():
            found["plain_table"] = error_of(lambda: strategy.run(lambda: loss(centers=plain)))
            table = tf.compat.v1.get_variable("mirrored", [C, D], trainable=False)
        found["outside_strategy"] = error_of(lambda: loss(centers=table))
    with tf.Graph().as_default():
        central = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
        with central.scope():
            found["central_storage"] = error_of(lambda: central.run(loss))
    return found


if __name__ == "__main__":
    print("RESULT " + json.dumps({"v2": scenario("v2"), "v1": scenario("v1"), "errors": errors()}),
          flush=True)
