"""What a GPU changes for cl, checked on whatever devices exist: `make gpu-check`.

On a GPU `tf.gather` returns zeros for an out-of-range id instead of
failing, mixed precision feeds float16 embeddings, and MirroredStrategy
gathers with collective ops. One table, rows:
  bad labels refused    an out-of-range label raises and the centers table is
                        unchanged (graph API, cl.tf2, Keras 3 on TF), on the
                        first device
  mixed_float16 exact   float32 centers equal to the numpy rule: float16
                        features (graph API), a float32 embedding used as
                        given under the policy (Keras 3 layer on TF)
  2 replicas, 1 device  MirroredStrategy over 2 logical devices of the first
                        GPU (memory limits; 2 logical CPUs where no GPU is):
                        every copy equal to the numpy rule on the global batch
                        (graph API, cl.tf2)
  step time             cl.tf2's term and the bare gather + scatter floor at
                        C = 10^5 and 10^6, D = 512, B = 256, on the first
                        device (--short: C = 10^3 and 10^4, for CI)
Each group runs in a process of its own (logical devices are set before
TensorFlow initialises; graph mode is process-wide). Exits 1 when a
correctness row fails. At most a few minutes on one GPU. Usage:
  .venv/bin/python bench/gpu_check.py [--short]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

C, D, B, ALPHA = 50, 8, 16, 0.5
GPU_MEMORY_MB = 8192  # per logical GPU for the 2-replica rows


def rule(centers, labels, features, alpha=ALPHA):
    """The paper's update on one batch, in float64 numpy."""
    centers = centers.astype("float64").copy()
    features = features.astype("float64")
    new = centers.copy()
    for j in set(labels.tolist()):
        mask = labels == j
        n = mask.sum()
        new[j] -= alpha * (n * centers[j] - features[mask].sum(0)) / (1 + n)
    return new


def batches(seed, steps=2, batch=B):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, C, batch).astype("int32"),
             (rng.normal(size=(batch, D)) + 1).astype("float32")) for _ in range(steps)]


def emit(check, front_end, ok, detail):
    print("ROW " + json.dumps(dict(check=check, front_end=front_end, ok=ok, detail=detail)),
          flush=True)


def devices(tf, split):
    """Device names to use: 2 logical ones of the first GPU (or CPU) if split."""
    gpus = tf.config.list_physical_devices("GPU")
    kind, physical = ("GPU", gpus[0]) if gpus else ("CPU", tf.config.list_physical_devices("CPU")[0])
    if len(gpus) > 1:
        tf.config.set_visible_devices(gpus[:1], "GPU")
    print(f"DEVICE {kind} ({len(gpus)} GPUs found)" if gpus else "DEVICE CPU (no GPU found)",
          flush=True)
    if split:
        limit = dict(memory_limit=GPU_MEMORY_MB) if gpus else {}
        tf.config.set_logical_device_configuration(
            physical, [tf.config.LogicalDeviceConfiguration(**limit)] * 2)
        return [f"/{kind.lower()}:0", f"/{kind.lower()}:1"]
    return [f"/{kind.lower()}:0"]


def refused(run_bad, read, errors):
    """(ok, detail): `run_bad` raised one of `errors` and `read()` is unchanged."""
    before = read()
    try:
        run_bad()
    except errors as error:
        kind = type(error).__name__
    else:
        return False, "no error: the bad label went through"
    after = read()
    if not (before == after).all():
        return False, f"{kind} raised but the table changed"
    return True, f"{kind}, table unchanged"


def close(got, want, atol):
    import numpy as np
    dev = float(np.max(np.abs(np.asarray(got, "float64") - want)))
    return dev <= atol, f"max |dev| {dev:.1e}"


# ---------------------------------------------------------------- graph API

def graph_single(tf, cl, device, dtype, name):
    import numpy as np
    graph = tf.Graph()
    with graph.as_default(), tf.device(device):
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features = tf.compat.v1.placeholder(dtype, [None, D])
        loss = cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, name=name)
        centers = cl.get_centers(name)
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((C, D))
    for y, x in batches(1):
        if dtype == tf.float16:
            x = x.astype("float16")
        session.run(loss, {labels: y, features: x})
        expected = rule(expected, y, x)
    if name == "bad":
        y, x = batches(2, 1)[0]
        for bad in (C, -1):
            y[3] = bad
            emit(f"bad label {bad} refused", "graph", *refused(
                lambda: session.run(loss, {labels: y, features: x}),
                lambda: session.run(centers), tf.errors.InvalidArgumentError))
    else:
        ok, detail = close(session.run(centers), expected, 1e-5)
        ok = ok and centers.dtype.base_dtype == tf.float32
        emit("mixed_float16 exact", "graph", ok,
             f"float16 features, {centers.dtype.base_dtype.name} centers, {detail}")
    session.close()


def part_graph(args):
    import numpy as np
    import tensorflow as tf
    names = devices(tf, split=True)
    tf.compat.v1.disable_eager_execution()
    import cl

    # Bad labels and float16 features on the first device.
    graph_single(tf, cl, names[0], tf.float32, "bad")
    graph_single(tf, cl, names[0], tf.float16, "half")

    # The rule on 2 replicas of one device.
    strategy = tf.distribute.MirroredStrategy(names)
    data = [batches(3 + r) for r in range(2)]
    graph = tf.Graph()
    with graph.as_default():
        ys = [tf.compat.v1.placeholder(tf.int32, [None]) for _ in range(2)]
        xs = [tf.compat.v1.placeholder(tf.float32, [None, D]) for _ in range(2)]

        def pick(values):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return tf.cond(tf.equal(replica, 0), lambda: values[0], lambda: values[1])

        with strategy.scope():
            losses = strategy.run(lambda: cl.center_loss(pick(ys), pick(xs), alpha=ALPHA,
                                                          num_classes=C, name="mirrored"))
            step = tf.group(strategy.experimental_local_results(losses))
            copies = strategy.experimental_local_results(cl.get_centers("mirrored"))
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((C, D))
    for s in range(2):
        feed = {ys[r]: data[r][s][0] for r in range(2)}
        feed.update({xs[r]: data[r][s][1] for r in range(2)})
        session.run(step, feed)
        expected = rule(expected, np.concatenate([data[r][s][0] for r in range(2)]),
                        np.concatenate([data[r][s][1] for r in range(2)]))
    values = session.run(list(copies))
    results = [close(v, expected, 1e-5) for v in values]
    emit("2 replicas of 1 device = rule", "graph", all(ok for ok, _ in results) and len(values) == 2,
         f"{len(values)} copies on {', '.join(names)}, " + "; ".join(d for _, d in results))


# ---------------------------------------------------------------- TF2, Keras 3

def part_eager(args):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf
    names = devices(tf, split=True)
    import cl.tf2

    # cl.tf2: bad labels on the first device.
    with tf.device(names[0]):
        center = cl.tf2.CenterLoss(C, D, alpha=ALPHA)

        @tf.function
        def step(y, x):
            return center(y, x)
        for y, x in batches(1):
            step(y, x)
        y, x = batches(2, 1)[0]
        for bad in (C, -1):
            y[3] = bad
            emit(f"bad label {bad} refused", "tf2", *refused(
                lambda: step(y, x).numpy(), lambda: center.centers.numpy(),
                tf.errors.InvalidArgumentError))

    # cl.tf2: 2 replicas of one device.
    strategy = tf.distribute.MirroredStrategy(names)
    data = [batches(3 + r) for r in range(2)]
    with strategy.scope():
        mirrored = cl.tf2.CenterLoss(C, D, alpha=ALPHA, name="mirrored")

    @tf.function
    def replica_step(ys, xs):
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return mirrored(tf.gather(ys, replica), tf.gather(xs, replica))
        return strategy.run(replica_fn)
    expected = np.zeros((C, D))
    for s in range(2):
        ys = np.stack([data[r][s][0] for r in range(2)])
        xs = np.stack([data[r][s][1] for r in range(2)])
        replica_step(tf.constant(ys), tf.constant(xs))
        expected = rule(expected, ys.reshape(-1), xs.reshape(-1, D))
    values = [v.numpy() for v in mirrored.centers.values]
    results = [close(v, expected, 1e-5) for v in values]
    emit("2 replicas of 1 device = rule", "tf2", all(ok for ok, _ in results) and len(values) == 2,
         f"{len(values)} copies on {', '.join(names)}, " + "; ".join(d for _, d in results))

    # Keras 3 on TF: bad labels, then mixed_float16.
    try:
        import keras
        if int(keras.__version__.split(".")[0]) < 3:
            raise ImportError(f"keras {keras.__version__} is not Keras 3")
        from cl.keras3 import CenterLoss
    except ImportError as error:
        for check in ("bad labels refused", "mixed_float16 exact"):
            emit(check, "keras3_tf", None, f"skipped: {error}")
        return

    def model_with(layer, dense_embedding):
        x, y = keras.Input((D,)), keras.Input((), dtype="int32")
        embedding = keras.layers.Dense(D)(x) if dense_embedding else x
        model = keras.Model([x, y], keras.layers.Dense(1)(layer([embedding, y])))
        model.compile(keras.optimizers.SGD(1e-3), "mse")
        return model

    with tf.device(names[0]):
        layer = CenterLoss(C, alpha=ALPHA, weight=0.01)
        model = model_with(layer, dense_embedding=True)
        targets = np.zeros((B, 1), "float32")
        for y, x in batches(1):
            model.train_on_batch([x, y], targets)
        y, x = batches(2, 1)[0]
        for bad in (C, -1):
            y[3] = bad
            emit(f"bad label {bad} refused", "keras3_tf", *refused(
                lambda: model.train_on_batch([x, y], targets),
                lambda: keras.ops.convert_to_numpy(layer.centers), Exception))

        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            layer = CenterLoss(C, alpha=ALPHA, weight=0.01)
            model = model_with(layer, dense_embedding=False)
            expected = np.zeros((C, D))
            for y, x in batches(1):
                model.train_on_batch([x, y], targets)
                # The layer does not autocast: the float32 embedding as given.
                expected = rule(expected, y, x)
            centers = keras.ops.convert_to_numpy(layer.centers)
            ok, detail = close(centers, expected, 1e-5)
            emit("mixed_float16 exact", "keras3_tf", ok and centers.dtype == np.float32,
                 f"float32 embedding used as given, {centers.dtype} centers, {detail}")
        finally:
            keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------- step times

def time_one(tf, cl, device, num_classes, dim, batch, repeats):
    import numpy as np
    rng = np.random.default_rng(0)
    with tf.device(device):
        labels = tf.constant(rng.integers(0, num_classes, batch).astype("int32"))
        features = tf.constant(rng.normal(size=(batch, dim)).astype("float32"))
        center = cl.tf2.CenterLoss(num_classes, dim, alpha=ALPHA)
        table = tf.Variable(tf.zeros([num_classes, dim]), trainable=False)

        @tf.function
        def term():
            return tf.reduce_sum(center(labels, features))

        @tf.function
        def floor():
            rows = tf.raw_ops.ResourceGather(resource=table.handle, indices=labels,
                                             dtype=tf.float32)
            tf.raw_ops.ResourceScatterSub(resource=table.handle, indices=labels,
                                          updates=ALPHA * (rows - features))
            return tf.reduce_sum(rows)  # fetched: the step has finished on the device
    times = {"cl": [], "floor": []}
    for round_ in range(repeats + 3):
        for name, fn in (("cl", term), ("floor", floor)):
            start = time.perf_counter()
            fn().numpy()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    cl_ms, floor_ms = (1e3 * statistics.median(times[k]) for k in ("cl", "floor"))
    emit(f"step time C={num_classes}", "tf2", None,
         f"cl {cl_ms:.2f} ms, floor {floor_ms:.2f} ms, cl/floor {cl_ms / floor_ms:.2f}x "
         f"(D={dim}, B={batch}, {device})")


def part_timing(args):
    import tensorflow as tf
    names = devices(tf, split=False)
    import cl.tf2
    classes = (1_000, 10_000) if args.short else (100_000, 1_000_000)
    repeats = 10 if args.short else 50
    dim, batch = 512, 256
    for num_classes in classes:
        time_one(tf, cl, names[0], num_classes, dim, batch, repeats)


PARTS = {"graph": part_graph, "eager": part_eager, "timing": part_timing}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="step times at C = 10^3, 10^4 and fewer repeats (CI on CPU)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        return PARTS[args.part](args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows, started, where = [], time.perf_counter(), "?"
    for part in PARTS:
        command = [sys.executable, __file__, "--part", part] + (["--short"] if args.short else [])
        result = subprocess.run(command, capture_output=True, text=True)
        found = [json.loads(line[4:]) for line in result.stdout.splitlines()
                 if line.startswith("ROW ")]
        rows += found
        where = next((line[7:] for line in result.stdout.splitlines()
                      if line.startswith("DEVICE ")), where)
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-3000:])
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            rows.append(dict(check=f"{part} checks ran", front_end="-", ok=False,
                             detail=f"exit {result.returncode}: {last[:100]}"))
    width = max(len(r["check"]) for r in rows)
    print(f"cl gpu-check on {where}, {time.perf_counter() - started:.0f} s"
          + (" (--short)" if args.short else ""))
    print(f"| {'check':<{width}} | front end | result | detail")
    print(f"|{'-' * (width + 2)}|-----------|--------|-------")
    for r in rows:
        result = "info" if r["ok"] is None else ("ok" if r["ok"] else "FAILED")
        print(f"| {r['check']:<{width}} | {r['front_end']:<9} | {result:<6} | {r['detail']}")
    failed = [r for r in rows if r["ok"] is False]
    print(f"{len(failed)} correctness row(s) failed" if failed else "all correctness rows ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
