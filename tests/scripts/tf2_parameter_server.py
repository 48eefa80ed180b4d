"""cl.tf2.CenterLoss under tf.distribute.ParameterServerStrategy (issue 17,
item 4): an in-process cluster on 127.0.0.1 (this process the chief, 2
worker and 2 ps servers), tables made in strategy.scope() under variable
partitioners, steps scheduled with ClusterCoordinator in the user's standard
form (a tf.function calling strategy.run). After every scheduled step each
table equals the numpy rule applied to that step's batch, losses and
gradients use the pre-update centers; the traced step reads no whole shard
(only per-shard sparse gathers and scatters touch the table); a bad label
fails the coordinator's fetch and leaves every table as it was; a
tf.train.Checkpoint round trip restores the values (into fresh sharded
tables, one with another shard count, and into a plain table); a
partitioner that does not split rows is refused before anything is made.

Run by tests/eager/test_shards.py in a subprocess; argv: the
tests/support folder. Prints one RESULT line, then leaves with os._exit (the
in-process servers never shut down).
"""

import json
import os
import signal
import sys
import tempfile
import traceback

import numpy as np

signal.alarm(100)  # never outlive the test, whatever happens
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference, free_ports
import reference  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import free_ports  # noqa: E402

import cl  # noqa: E402
from cl.tf2 import CenterLoss  # noqa: E402

D, ALPHA = 3, 0.5
PARTITIONERS = tf.distribute.experimental.partitioners
# name: (rows, partitioner): 2 even shards, 2 uneven (6/5), 3 uneven (4/4/3)
# on 2 ps tasks, and an unpartitioned table (one plain variable on a ps).
TABLES = {"fixed": (10, PARTITIONERS.FixedShardsPartitioner(2)),
          "min": (11, PARTITIONERS.MinSizePartitioner(min_shard_bytes=48, max_shards=2)),
          "max": (11, PARTITIONERS.MaxSizePartitioner(max_shard_bytes=48)),
          "plain": (10, None)}
SIZES = [8, 7, 1, 6, 8, 5]  # batches; step 3 has a NaN sample


class Chosen:
    """The strategy's partitioner: the one chosen for the next table (a
    strategy has one partitioner; the tables here each want their own)."""

    def __init__(self):
        self.current = None

    def __call__(self, shape, dtype, axis=0):
        if self.current is None:
            return [1] * shape.rank
        return self.current(shape=shape, dtype=dtype)


def in_process_cluster():
    ports = free_ports(4)
    spec = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{port}" for port in ports[:2]],
                                 "ps": [f"127.0.0.1:{port}" for port in ports[2:]]})
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=3)
    servers = [tf.distribute.Server(spec, job_name="worker", task_index=task, config=config,
                                    protocol="grpc") for task in range(2)]
    servers += [tf.distribute.Server(spec, job_name="ps", task_index=task, protocol="grpc")
                for task in range(2)]
    return servers, tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")


def error_text(error):
    return f"{type(error).__name__}: {getattr(error, 'message', None) or error}"


def values(center):
    return np.asarray(center.centers.numpy(), np.float64)


def batches(rng):
    for step, size in enumerate(SIZES):
        y = rng.integers(0, 10, size).astype(np.int32)
        x = (rng.normal(size=(size, D)) + y[:, None] % 5).astype(np.float32)
        w = rng.choice([0.0, 0.5, 1.0, 2.0], size).astype(np.float32)
        if step == 3:
            x[2, 0] = np.nan
        yield step, y, x, w


def op_counts(function):
    """Op types of the traced step, its cond branches included."""
    graph = function.graph.as_graph_def()
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    counts = {}
    for node in nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def make_tables(strategy, chosen, report):
    tables = {}
    with strategy.scope():
        for name, (rows, partitioner) in TABLES.items():
            chosen.current = partitioner
            tables[name] = CenterLoss(rows, D, alpha=ALPHA, name=name)
        chosen.current = None
    report["layout"] = {name: {
        "kind": type(center.centers).__name__,
        "rows": [int(v.shape[0]) for v in getattr(center.centers, "variables", [center.centers])],
        "devices": [v.device for v in getattr(center.centers, "variables", [center.centers])]}
        for name, center in tables.items()}
    return tables


def train(strategy, coordinator, tables, report):
    spec = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, D], tf.float32),
            tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.bool)]

    @tf.function(input_signature=spec)
    def step(y, x, w, training):
        def replica_fn(y, x, w, training):
            with tf.GradientTape() as tape:
                tape.watch(x)
                losses = {"fixed": tables["fixed"](y, x),
                          "min": tables["min"](y, x, sample_weight=w),
                          "max": tables["max"](y, x, training=training),
                          "plain": tables["plain"](y, x)}
            return losses, tape.gradient(losses["fixed"], x)
        return strategy.run(replica_fn, args=(y, x, w, training))

    report["ops"] = op_counts(step.get_concrete_function())
    rng = np.random.default_rng(3)
    start = rng.normal(size=(11, D)).astype(np.float32)
    for center in tables.values():
        center.centers.assign(start[:center.num_classes])
    expected = {name: values(center) for name, center in tables.items()}
    dev = report["dev"] = {"center": 0.0, "loss": 0.0, "grad": 0.0}
    report["moved"], report["frozen"] = True, True
    for index, y, x, w in batches(rng):
        training = index != 4  # the "max" table stays put in step 4
        previous = {name: values(center) for name, center in tables.items()}
        result = coordinator.schedule(step, args=(y, x, w, tf.constant(training)))
        losses, grad = result.fetch()
        pre = expected["fixed"]
        for name, center in tables.items():
            want = reference.center_loss(y, x, expected[name])
            got = np.asarray(losses[name])
            assert np.array_equal(np.isnan(got), np.isnan(want)), (name, got, want)
            dev["loss"] = max(dev["loss"], float(np.nanmax(np.abs(got - want))))
            weights = w if name == "min" else None
            before = expected[name]
            if name != "max" or training:
                expected[name] = reference.update_centers(y, x, before, ALPHA, weights)
            table = values(center)
            dev["center"] = max(dev["center"], float(np.abs(table - expected[name]).max()))
            changed = not np.array_equal(expected[name], before)
            if name == "max" and not training:
                report["frozen"] &= bool(np.array_equal(table, previous[name]))
            elif index != 2 or name != "min":
                report["moved"] &= changed
        grad_want = x - pre[y]  # from the pre-update centers
        dev["grad"] = max(dev["grad"], float(np.nanmax(np.abs(np.asarray(grad) - grad_want))))
    # An eager call on the coordinator (no tf.function) takes the same route.
    losses = tables["max"](y, x)
    want = reference.center_loss(y, x, expected["max"])
    expected["max"] = reference.update_centers(y, x, expected["max"], ALPHA)
    report["eager_dev"] = max(float(np.nanmax(np.abs(losses.numpy() - want))),
                              float(np.abs(values(tables["max"]) - expected["max"]).max()))
    return step


def bad_label(strategy, coordinator, tables, step, report):
    before = {name: values(center) for name, center in tables.items()}
    y = np.array([1, 12, 3], np.int32)
    x = np.ones((3, D), np.float32)
    result = coordinator.schedule(step, args=(y, x, np.ones(3, np.float32), tf.constant(True)))
    try:
        result.fetch()
        report["bad_label"] = None
    except Exception as error:  # noqa: BLE001 (the test checks which)
        report["bad_label"] = error_text(error)
    try:
        coordinator.join()
    except Exception as error:  # noqa: BLE001
        report["bad_label_join"] = error_text(error)
    report["bad_label_unchanged"] = all(
        np.array_equal(values(center), before[name]) for name, center in tables.items())
    # The coordinator goes on: the next good step runs and moves the tables.
    y = np.array([1, 9, 3], np.int32)
    coordinator.schedule(step, args=(y, x, np.ones(3, np.float32), tf.constant(True))).fetch()
    report["next_step_moves"] = all(
        not np.array_equal(values(center), before[name]) for name, center in tables.items())


def checkpoint(strategy, chosen, tables, report):
    folder = tempfile.mkdtemp()
    saved = {name: values(tables[name]) for name in ("fixed", "min")}
    paths = {name: tf.train.Checkpoint(center=tables[name]).save(os.path.join(folder, name))
             for name in saved}
    found = report["checkpoint"] = {}
    reader = tf.train.load_checkpoint(paths["fixed"])
    found["keys"] = {key: shape for key, shape in reader.get_variable_to_shape_map().items()
                     if "centers" in key}
    targets = {}
    with strategy.scope():
        chosen.current = TABLES["fixed"][1]
        targets["same_shards"] = ("fixed", CenterLoss(10, D, name="fresh"))
        chosen.current = TABLES["max"][1]  # saved with 2 shards, restored into 3
        targets["other_shards"] = ("min", CenterLoss(11, D, name="fresh_max"))
        chosen.current = None
    targets["no_strategy"] = ("fixed", CenterLoss(10, D, name="outside"))
    for key, (source, fresh) in targets.items():
        try:
            tf.train.Checkpoint(center=fresh).restore(paths[source]).assert_consumed()
            found[key] = bool(np.array_equal(values(fresh), saved[source]))
        except Exception as error:  # noqa: BLE001
            found[key] = error_text(error)
    # For comparison: the restored values saved again, without any strategy.
    paths["unsharded"] = tf.train.Checkpoint(center=targets["no_strategy"][1]).save(
        os.path.join(folder, "unsharded"))
    for key, source, name in (("read_centers", "fixed", None),
                              ("read_centers_named", "fixed", "center/centers"),
                              ("read_centers_unsharded", "unsharded", None)):
        try:
            found[key] = bool(np.array_equal(cl.read_centers(paths[source], name),
                                             saved["fixed"]))
        except Exception as error:  # noqa: BLE001
            found[key] = error_text(error)


def refusal(strategy, chosen, report):
    made = []

    def counting(next_creator, **kwargs):
        made.append(kwargs.get("name"))
        return next_creator(**kwargs)

    found = report["refusal"] = {}
    for key, partitioner in (("axis_1", lambda shape, dtype: [1, 2]),
                             ("zero", lambda shape, dtype: [0, 1])):
        with strategy.scope(), tf.variable_creator_scope(counting):
            chosen.current = partitioner
            try:
                CenterLoss(13, D, name=key)
                found[key] = None
            except Exception as error:  # noqa: BLE001
                found[key] = error_text(error)
            chosen.current = None
    found["created"] = made


def main():
    report = {"tf": tf.__version__, "errors": {}}
    _servers, resolver = in_process_cluster()
    chosen = Chosen()
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=chosen)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    report["replicas"] = strategy.num_replicas_in_sync
    try:
        tables = make_tables(strategy, chosen, report)
    except Exception as error:  # noqa: BLE001
        report["errors"]["construct"] = error_text(error)
        return report
    sections = {
        "train": lambda: train(strategy, coordinator, tables, report),
        "bad_label": lambda: bad_label(strategy, coordinator, tables, report["step"], report),
        "checkpoint": lambda: checkpoint(strategy, chosen, tables, report),
        "refusal": lambda: refusal(strategy, chosen, report)}
    for name, run in sections.items():
        try:
            result = run()
            if name == "train":
                report["step"] = result
        except Exception as error:  # noqa: BLE001 (reported, asserted by the test)
            report["errors"][name] = error_text(error) + traceback.format_exc()[-1500:]
    report.pop("step", None)
    return report


if __name__ == "__main__":
    try:
        result = main()
    except Exception as error:  # noqa: BLE001
        result = {"errors": {"main": error_text(error) + traceback.format_exc()[-1500:]}}
    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)
