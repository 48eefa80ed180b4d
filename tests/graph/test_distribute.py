"""Center loss across replicas, workers and TF1 towers, against the numpy
reference applied to the GLOBAL batch (every replica's batch concatenated).

Replicas are 2 logical CPU devices, which must be configured before
TensorFlow initialises, so those scenarios run in a subprocess that prints
JSON; workers are 2 local processes on 127.0.0.1. Each subprocess checks
many steps and reports its worst deviations, which the tests assert.
"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import reference
import tensorflow as tf
from helpers import run_python

import cl

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C, D = 10, 3
# float32 rounding of the update against the float64 reference.
TOLERANCE = 1e-5

# Shared by the subprocess scripts: the batches of a step, per replica.
# Replica 0 draws classes 0-4, replica 1 classes 3-7: 0-2 and 5-7 are each on
# one replica only, 8-9 never appear. Sizes are uneven and sometimes 0; a
# NaN sample and weight-0 samples appear on some steps. The largest batch is
# 5 at every step: graph-mode collective ops (MultiWorkerMirroredStrategy)
# cannot change shape between steps (tensorflow#34250); the MirroredStrategy
# scenario adds steps where it changes.
BATCHES = r"""
import numpy as np

SIZES = [(5, 3), (0, 5), (5, 0), (5, 5), (2, 5), (1, 5)]

def step_batches(rng, step, num_dims):
    sizes = SIZES[step % len(SIZES)]
    labels = [rng.integers(0, 5, sizes[0]), rng.integers(3, 8, sizes[1])]
    features = [(rng.normal(size=(n, num_dims)) + y[:, None]).astype(np.float32)
                for n, y in zip(sizes, labels)]
    weights = [rng.choice([0.0, 0.5, 1.0, 2.0], n).astype(np.float32) for n in sizes]
    if step == 3:
        features[1][2, 0] = np.nan
    return labels, features, weights
"""

MIRRORED = BATCHES + r"""
import json, sys
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import reference
import cl

C, D, STEPS = 10, 3, 24
SIZES += [(7, 2), (1, 1)]
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
            losses = [strategy.experimental_local_results(t) for t in (plain, weighted)]
            rng = np.random.default_rng(0)
            start = rng.normal(size=(C, D)).astype(np.float32)
            assign = [table.assign(start) for table in tables]
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(assign)
    expected = [start.astype(np.float64)] * 2
    report = dict(dense_reads=reads, aggregation=tables[0].aggregation.name,
                  copies_equal=True, center_dev=0.0, loss_dev=0.0, frozen_when_off=True,
                  untouched_rows_equal=True)
    last = start
    for step in range(STEPS):
        y, x, w = step_batches(rng, step, D)
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
    except Exception as error:  # noqa: BLE001 - reported to the test
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


print("RESULT " + json.dumps({"v2": scenario("v2"), "v1": scenario("v1"), "errors": errors()}))
"""

# Shared by the worker scripts: this worker's TF_CONFIG (argv: task index,
# ports, tests folder), a time bound, graph mode, and the reference.
WORKER_PRELUDE = r"""
import hashlib, json, os, signal, sys
import numpy as np
signal.alarm(150)  # a worker never outlives its test, whatever happens
task, ports, tests = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
    "task": {"type": "worker", "index": task}})
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
sys.path.insert(0, tests)
import reference
import cl
"""

WORKER = BATCHES + WORKER_PRELUDE + r"""

C, D, STEPS = 10, 3, 24
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
print("RESULT " + json.dumps(report), flush=True)
"""


def result_of(stdout, stderr):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; stderr tail:\n{stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def mirrored():
    done = run_python(MIRRORED, TESTS, timeout=300)
    return result_of(done.stdout, done.stderr)


@pytest.mark.parametrize("kind", ["v2", "v1"])
class TestMirroredStrategy:
    """tf.distribute.MirroredStrategy and tf.compat.v1.distribute.MirroredStrategy."""

    def test_copies_bitwise_equal_and_follow_the_global_batch(self, mirrored, kind):
        report = mirrored[kind]
        assert report["copies_equal"]
        assert report["center_dev"] < TOLERANCE
        assert report["untouched_rows_equal"]
        assert report["aggregation"] == "ONLY_FIRST_REPLICA"

    def test_losses_use_the_pre_update_centers(self, mirrored, kind):
        assert mirrored[kind]["loss_dev"] < TOLERANCE

    def test_training_off_changes_nothing(self, mirrored, kind):
        assert mirrored[kind]["frozen_when_off"]

    def test_no_dense_read_of_the_table(self, mirrored, kind):
        assert mirrored[kind]["dense_reads"] == 0


class TestUnsupportedCases:
    def test_cross_replica_context_says_where_to_call(self, mirrored):
        message = mirrored["errors"]["cross_replica"]
        assert message.startswith("RuntimeError") and "strategy.run" in message
        assert mirrored["errors"]["cross_replica_read_only"] is None

    def test_plain_table_shared_by_replicas_is_refused(self, mirrored):
        message = mirrored["errors"]["plain_table"]
        assert message.startswith("ValueError") and "strategy.scope()" in message

    def test_mirrored_table_outside_its_strategy_is_refused(self, mirrored):
        message = mirrored["errors"]["outside_strategy"]
        assert message.startswith("RuntimeError") and "strategy.run" in message

    def test_other_strategies_are_refused(self, mirrored):
        message = mirrored["errors"]["central_storage"]
        assert message.startswith("NotImplementedError") and "CentralStorageStrategy" in message


KERAS_FIT = r"""
import json, sys, os, tempfile
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import reference
import cl
from cl import compat
keras = compat.keras_module()
K = compat.keras_backend()

C, D, N, B, STEPS = 10, 3, 48, 8, 3
STRATEGIES = {"v2": tf.distribute.MirroredStrategy, "v1": tf.compat.v1.distribute.MirroredStrategy}


def build(kind_loss):
    inputs = keras.Input((4,))
    embedding = keras.layers.Dense(D, name="embedding", trainable=False)(inputs)
    logits = keras.layers.Dense(C, name="logits", trainable=False)(embedding)
    if kind_loss == "blog":
        # Blog: centers on the logits, one output.
        model = keras.Model(inputs, logits)
        cl.compile_model(model, keras.optimizers.legacy.SGD(0.0))
        return model, model
    model = keras.Model(inputs, [logits, embedding])
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0),
                     loss={"logits": cl.SparseSoftmaxLoss(),
                           "embedding": cl.CenterLoss(num_classes=C, alpha=0.5)},
                     loss_weights={"logits": 1.0, "embedding": 0.1})
    return model, keras.Model(inputs, embedding)


def scenario(kind, kind_loss, weighted):
    K.clear_session()
    cl.NUM_CLASSES, cl.ALPHA = C, 0.5
    strategy = STRATEGIES[kind](["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(1)
    with strategy.scope():
        model, feature_model = build(kind_loss)
    session = K.get_session()
    table = cl.centers_of(model)[0]
    start = rng.normal(size=tuple(table.shape.as_list())).astype(np.float32)
    K.batch_set_value([(table, start)])
    x = rng.normal(size=(N, 4)).astype(np.float32)
    y = rng.integers(0, C, N)
    w = rng.choice([0.0, 0.5, 1.0, 2.0], N).astype(np.float32) if weighted else None
    feats = feature_model.predict(x, batch_size=B) if kind_loss != "blog" else model.predict(x, batch_size=B)
    if kind_loss == "blog":
        targets = np.eye(C, dtype=np.float32)[y]
    else:
        targets = {"logits": y, "embedding": y}
    report = dict(copies_equal=True, center_dev=0.0, moved=False, eval_frozen=True,
                  values=len(getattr(table, "values", [])), name=table.name)
    expected = start.astype(np.float64)
    for step in range(STEPS):
        lo = (step * B) % N
        sl = slice(lo, lo + B)
        model.fit(x[sl], targets if kind_loss == "blog" else {k: v[sl] for k, v in targets.items()},
                  sample_weight=None if w is None else w[sl],
                  batch_size=B, epochs=1, verbose=0, shuffle=False) if kind_loss != "blog" else \
            model.fit(x[sl], targets[sl], sample_weight=None if w is None else w[sl],
                      batch_size=B, epochs=1, verbose=0, shuffle=False)
        expected = reference.update_centers(y[sl], feats[sl], expected, 0.5,
                                            None if w is None else w[sl])
        copies = session.run(list(table.values))
        report["copies_equal"] &= all(np.array_equal(copies[0], c) for c in copies[1:])
        report["center_dev"] = max(report["center_dev"], float(np.abs(copies[0] - expected).max()))
    report["moved"] = float(np.abs(expected - start).max())
    before = session.run(list(table.values))
    ev_t = targets[:B] if kind_loss == "blog" else {k: v[:B] for k, v in targets.items()}
    model.evaluate(x[:B], ev_t, batch_size=B, verbose=0)
    model.predict(x[:B], batch_size=B)
    middle = session.run(list(table.values))
    report["eval_frozen"] = all(np.array_equal(a, b) for a, b in zip(before, middle))
    val = (x[:B], ev_t)
    model.fit(x[B:2*B], targets[B:2*B] if kind_loss == "blog" else {k: v[B:2*B] for k, v in targets.items()},
              batch_size=B, epochs=1, verbose=0, shuffle=False, validation_data=val)
    expected = reference.update_centers(y[B:2*B], feats[B:2*B], expected, 0.5)
    after = session.run(list(table.values))
    report["center_dev"] = max(report["center_dev"], float(np.abs(after[0] - expected).max()))
    report["copies_equal"] &= all(np.array_equal(after[0], c) for c in after[1:])
    # Checkpoint: TF format carries the table.
    path = os.path.join(tempfile.mkdtemp(), "ckpt")
    model.save_weights(path)
    saved = after[0]
    K.batch_set_value([(table, np.zeros(tuple(table.shape.as_list()), np.float32))])
    model.load_weights(path)
    restored = session.run(list(table.values))
    report["checkpoint_ok"] = all(np.array_equal(r, saved) for r in restored)
    report["tables"] = len(cl.centers_of(model))
    return report


def safe(*args):
    try:
        return scenario(*args)
    except Exception as error:
        return f"{type(error).__name__}: {error}"

# One scenario per process: closing a session (clear_session, exit) after a
# distributed fit can wait forever on Keras's tf.data generator threads
# (seen once in a few runs on 2 busy cores), so the script never closes one.
case = sys.argv[2]
kind, kind_loss = case.split("-")[:2]
# Keras 2 applies sample weights under a strategy to single-output models
# only (with several outputs it ignores them, in its own loss too).
print("RESULT " + json.dumps({case: safe(kind, kind_loss, case.endswith("weighted"))}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("case", ["v2-classes", "v2-blog", "v1-classes", "v1-blog", "v2-blog-weighted"])
def test_keras_fit_follows_the_global_batch(case):
    """Keras 2 fit under MirroredStrategy (both classes): CenterLoss on the
    embedding of a two-output model, and the blog's cl.loss on the logits.
    The model is frozen, so predict gives the features each step used."""
    done = run_python(KERAS_FIT, TESTS, case, timeout=300)
    report = result_of(done.stdout, done.stderr)[case]
    assert isinstance(report, dict), report
    # The user's model owns one mirrored table, used by every replica's clone.
    assert report["tables"] == 1 and report["values"] == 2
    assert report["name"] == "center_loss/centers:0"
    assert report["moved"] > 0.1
    assert report["copies_equal"]
    assert report["center_dev"] < TOLERANCE
    assert report["eval_frozen"]
    assert report["checkpoint_ok"]


KERAS_REFUSALS = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import cl
from cl import compat
keras, K = compat.keras_module(), compat.keras_backend()


def attempt(case):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((4,))
        a = keras.layers.Dense(3, name="a")(inputs)
        b = keras.layers.Dense(3, name="b")(inputs)
        model = keras.Model(inputs, [a, b])
        center = cl.CenterLoss(num_classes=5)
        if case == "one_table_two_outputs":
            cl.compile_model(model, keras.optimizers.legacy.SGD(0.0), loss=[center, center])
        else:
            try:
                cl.compile_model(model, keras.optimizers.legacy.SGD(0.0), loss=[center, None],
                                 metrics=[cl.center_metrics(center), []])
            except NotImplementedError as error:  # refused at compile: nothing made
                return {"error": str(error), "unchanged": not cl.centers_of(model)}
    x, y = np.ones((8, 4), np.float32), np.arange(8) % 5
    before = K.get_session().run(cl.centers_of(model)[0].values[0])
    try:
        model.fit(x, [y, y], batch_size=8, verbose=0)
    except NotImplementedError as error:
        after = K.get_session().run(cl.centers_of(model)[0].values[0])
        return {"error": str(error), "unchanged": bool(np.array_equal(before, after))}
    return {"error": None}


print("RESULT " + json.dumps({sys.argv[1]: attempt(sys.argv[1])}))
"""


@pytest.mark.parametrize("case, message", [
    ("one_table_two_outputs", "two losses update the centers table"),
    ("center_metrics", "center metrics .* are not supported under MirroredStrategy")])
def test_keras_cases_that_cannot_be_exact_under_a_strategy_are_refused(case, message):
    done = run_python(KERAS_REFUSALS, case, timeout=300)
    report = result_of(done.stdout, done.stderr)[case]
    assert report["error"] and re.search(message, report["error"]), report
    assert report["unchanged"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multi_worker_mirrored_strategy_two_processes():
    reports = run_workers(WORKER)
    assert [r["replicas"] for r in reports] == [2, 2]
    # Both workers' tables are bitwise identical after every step ...
    assert reports[0]["hashes"] == reports[1]["hashes"]
    assert len(set(reports[0]["hashes"])) == len(reports[0]["hashes"])  # they moved
    # ... and follow the paper's rule on the global batch.
    for report in reports:
        assert report["center_dev"] < TOLERANCE
        assert report["loss_dev"] < TOLERANCE


# Keras 2 fit under MultiWorkerMirroredStrategy: every worker passes the same
# numpy data (Keras's contract) and takes its slice of each global batch, so
# the global batch of step s is rows [s*B, (s+1)*B) of x.
KERAS_WORKER = WORKER_PRELUDE + r"""
from cl import compat
keras, K = compat.keras_module(), compat.keras_backend()

C, D, N, B, EPOCHS = 6, 3, 32, 8, 2
strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
kernel = np.random.default_rng(7).normal(size=(4, D)).astype("float32")
with strategy.scope():
    inputs = keras.Input((4,))
    embedding = keras.layers.Dense(D, name="embedding", trainable=False, use_bias=False,
                                   kernel_initializer=keras.initializers.Constant(kernel))(inputs)
    logits = keras.layers.Dense(C, name="logits", trainable=False)(embedding)
    model = keras.Model(inputs, [logits, embedding])
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0),
                     loss={"logits": cl.SparseSoftmaxLoss(),
                           "embedding": cl.CenterLoss(num_classes=C, alpha=0.5)},
                     loss_weights={"logits": 1.0, "embedding": 0.1})
rng = np.random.default_rng(0)
x = rng.normal(size=(N, 4)).astype("float32")
y = rng.integers(0, C - 1, N)  # class C-1 never appears
model.fit(x, {"logits": y, "embedding": y}, batch_size=B, epochs=EPOCHS, shuffle=False, verbose=0)
table = strategy.experimental_local_results(cl.centers_of(model)[0])[0]
centers = K.get_session().run(table)
features, expected = x @ kernel, np.zeros((C, D))
for _ in range(EPOCHS):
    for start in range(0, N, B):
        part = slice(start, start + B)
        expected = reference.update_centers(y[part], features[part], expected, 0.5)
print("RESULT " + json.dumps(dict(
    replicas=strategy.num_replicas_in_sync, hash=hashlib.sha256(centers.tobytes()).hexdigest(),
    center_dev=float(np.abs(centers - expected).max()), moved=float(np.abs(expected).max()),
    absent_zero=bool(not centers[C - 1].any()))), flush=True)
"""


def run_workers(script, timeout=180):
    """Runs `script` as 2 workers on 127.0.0.1; returns their RESULT dicts."""
    ports = ",".join(map(str, free_ports(2)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(task), ports, TESTS],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for task in range(2)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=timeout))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return [result_of(*output) for output in outputs]


def test_keras_fit_under_multi_worker_mirrored_strategy():
    reports = run_workers(KERAS_WORKER)
    assert [r["replicas"] for r in reports] == [2, 2]
    assert reports[0]["hash"] == reports[1]["hash"]
    for report in reports:
        assert report["moved"] > 0.1 and report["absent_zero"]
        assert report["center_dev"] < TOLERANCE


class TestTowers:
    def test_towers_read_and_one_update_follows_the_global_batch(self, session, rng):
        towers = cl.TowerCenterLoss(num_classes=C, alpha=0.5)
        inputs = [(tf.compat.v1.placeholder(tf.int32, [None]),
                   tf.compat.v1.placeholder(tf.float32, [None, D]),
                   tf.compat.v1.placeholder(tf.float32, [None])) for _ in range(3)]
        losses = []
        for i, (y, x, w) in enumerate(inputs):
            with tf.compat.v1.variable_scope(f"tower_{i}"), tf.device("/cpu:0"):
                losses.append(towers(y, x, weights=w if i == 2 else None))
        update = towers.update_op()
        assert towers.update_op() is update
        centers = towers.centers
        assert centers.name == "tower_0/center_loss/centers:0"
        session.run(tf.compat.v1.global_variables_initializer())
        start = rng.normal(size=(C, D)).astype(np.float32)
        session.run(centers.assign(start))
        expected = start.astype(np.float64)
        for step in range(22):
            sizes = [(4, 3, 5), (0, 6, 2), (3, 0, 0)][step % 3]
            y = [rng.integers(3 * i, 3 * i + 4, n) for i, n in enumerate(sizes)]
            x = [rng.normal(size=(n, D)).astype(np.float32) + yi[:, None] for n, yi in zip(sizes, y)]
            w = [np.ones(n, np.float32) for n in sizes]
            w[2] = rng.choice([0.0, 1.0, 3.0], sizes[2]).astype(np.float32)
            if step == 4:
                x[1][0, 1] = np.nan
            feed = {ph: value for tower, data in zip(inputs, zip(y, x, w))
                    for ph, value in zip(tower, data)}
            if step % 7 == 6:
                # Losses alone (evaluation) read without updating.
                before = session.run(centers)
                session.run(losses, feed)
                np.testing.assert_array_equal(session.run(centers), before)
                continue
            got, _ = session.run([losses, update], feed)
            gy, gx, gw = np.concatenate(y), np.concatenate(x), np.concatenate(w)
            np.testing.assert_allclose(np.concatenate(got), reference.center_loss(gy, gx, expected),
                                       rtol=TOLERANCE, atol=TOLERANCE)
            expected = reference.update_centers(gy, gx, expected, 0.5, gw)
            np.testing.assert_allclose(session.run(centers), expected, rtol=TOLERANCE, atol=TOLERANCE)

    def test_tower_after_update_op_is_refused(self, session):
        towers = cl.TowerCenterLoss(num_classes=C)
        towers(tf.constant([1]), tf.ones([1, D]))
        towers.update_op()
        with pytest.raises(RuntimeError, match="after update_op"):
            towers(tf.constant([1]), tf.ones([1, D]))

    def test_each_instance_owns_its_table_unless_given_one(self, session):
        first, second = cl.TowerCenterLoss(num_classes=C), cl.TowerCenterLoss(num_classes=C)
        first(tf.constant([1]), tf.ones([1, D]))
        with pytest.warns(UserWarning):
            second(tf.constant([1]), tf.ones([1, D]))
        assert first.centers is not second.centers
        shared = cl.TowerCenterLoss(num_classes=C, centers=first.centers)
        shared(tf.constant([1]), tf.ones([1, D]))
        assert shared.centers is first.centers
