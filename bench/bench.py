"""Cost of cl's center loss against softmax alone and two other formulations.

Run by `make bench`:  .venv/bin/python bench/bench.py --out out/bench

Everything is TF1-style graph mode (`tf.compat.v1.Session`). Each (variant,
num_classes) pair runs in its own freshly spawned process with its own graph,
so `peak_rss_mb` is that variant's own peak resident memory and nothing is
left over from the one before. Inputs live in the graph (constants and
variables, labels drawn in-graph from a preset random pool), so a step is one
`session.run(step)` with no feed_dict.

Full training steps (same model, same optimizer, same labels):
  softmax             fixed input -> dense D->D (the embedding) -> FC D->C,
                      sparse softmax cross-entropy, Momentum step.
  cl                  softmax + LAMBDA * cl.center_loss on the embedding; the
                      centers move by cl's own sparse update (no slots).
  dense_distmat       softmax + LAMBDA * the distance-matrix center loss of
                      KaiyangZhou/pytorch-center-loss: a B x C matrix
                      ||x||^2 + ||c||^2 - 2 x c^T masked by one-hot labels;
                      the centers are a trainable variable moved by Momentum.
  embedding_param     softmax + LAMBDA * 1/2||x - c_y||^2 with the centers a
                      trainable table read with tf.gather (the Keras
                      Embedding-layer trick); Momentum moves them.
The center term on its own (no FC, no softmax):
  cl_term             cl.center_loss forward + its built-in update, on fixed
                      features.
  dense_distmat_term  the distance-matrix loss + a Momentum step on the
                      centers and the features.
  floor_gather_scatter  gather B rows of a [C, D] resource variable and
                      scatter_sub B rows back: the least any center loss
                      with a per-class table can do per step.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import tensorflow as tf

import cl

VARIANTS = ("softmax", "cl", "dense_distmat", "embedding_param",
            "cl_term", "dense_distmat_term", "floor_gather_scatter")
# One optimizer for every trained variable in every variant. Momentum keeps
# one slot per variable, so the slot column shows what a trainable centers
# table costs on top of the table itself (Adam would double that).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
LAMBDA = 0.003  # weight of the center term in the full steps
ALPHA = 0.5     # cl's center learning rate (the paper's)
LABEL_POOL = 64  # preset random label batches; each step picks one in-graph
WARMUP = 5
MIN_REPEATS = 10
# A variant whose warm-up says `repeats` steps would take longer than this
# gets fewer repeats (never under MIN_REPEATS): keeps `make bench` short.
SECONDS_PER_VARIANT = 15.0


def momentum():
    return tf.compat.v1.train.MomentumOptimizer(LEARNING_RATE, MOMENTUM)


def batch_labels(batch, num_classes):
    """int32 [batch]: one row of a fixed random pool, picked anew each step."""
    pool = np.random.RandomState(0).randint(
        0, num_classes, size=(LABEL_POOL, batch)).astype(np.int32)
    row = tf.random.uniform([], 0, LABEL_POOL, dtype=tf.int32, seed=1)
    return tf.gather(tf.constant(pool), row)


def dense(inputs, units, name):
    """A trainable fully connected layer `inputs @ kernel + bias`."""
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable(
            "kernel", [inputs.shape[1], units], tf.float32,
            initializer=tf.compat.v1.glorot_uniform_initializer())
        bias = tf.compat.v1.get_variable(
            "bias", [units], tf.float32, initializer=tf.compat.v1.zeros_initializer())
    return tf.matmul(inputs, kernel) + bias


def embedding(batch, dim):
    """[batch, dim] embedding: a trainable dense layer on a fixed input."""
    inputs = tf.constant(np.random.RandomState(1).randn(batch, dim).astype(np.float32))
    return dense(inputs, dim, "embedding")


def softmax_term(labels, features, num_classes):
    logits = dense(features, num_classes, "fc")
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))


def trainable_centers(num_classes, dim):
    return tf.compat.v1.get_variable(
        "centers", [num_classes, dim], tf.float32,
        initializer=tf.compat.v1.random_normal_initializer(), trainable=True)


def distmat_center_loss(labels, features, centers):
    """The pytorch-center-loss formulation, written in TF.

    Every step builds the full [batch, num_classes] squared-distance matrix
    (an O(B*C*D) matmul), keeps the label column by a one-hot mask, clamps
    (so each masked-out zero counts as 1e-12, as there) and averages over the
    batch. The gradient reaching `centers` is a dense [C, D] tensor.
    """
    num_classes = tf.compat.dimension_value(centers.shape[0])
    distmat = (tf.reduce_sum(tf.square(features), axis=1, keepdims=True)
               + tf.reduce_sum(tf.square(centers), axis=1)[None, :]
               - 2.0 * tf.matmul(features, centers, transpose_b=True))
    mask = tf.one_hot(labels, num_classes, dtype=distmat.dtype)
    dist = tf.clip_by_value(distmat * mask, 1e-12, 1e12)
    return tf.reduce_sum(dist) / tf.cast(tf.shape(features)[0], dist.dtype)


def embedding_center_loss(labels, features, centers):
    """1/2 ||x - c_y||^2 through tf.gather: the centers get sparse gradients."""
    centers_batch = tf.gather(centers, labels)
    return tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(features - centers_batch), axis=1))


# Each builder adds one variant to the default graph and returns
# (step, centers variables, optimizer or None). Running `step` once is one
# training step; the loss is part of it, so cl's update (which rides on its
# loss tensor) always runs.

def build_softmax(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    loss = softmax_term(labels, embedding(batch, dim), num_classes)
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [], optimizer


def build_cl(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    center = tf.reduce_mean(cl.center_loss(labels, features, alpha=ALPHA,
                                           num_classes=num_classes))
    loss = softmax_term(labels, features, num_classes) + LAMBDA * center
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [cl.get_centers()], optimizer


def build_dense_distmat(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    centers = trainable_centers(num_classes, dim)
    loss = (softmax_term(labels, features, num_classes)
            + LAMBDA * distmat_center_loss(labels, features, centers))
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def build_embedding_param(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    centers = trainable_centers(num_classes, dim)
    loss = (softmax_term(labels, features, num_classes)
            + LAMBDA * embedding_center_loss(labels, features, centers))
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def fixed_features(batch, dim, trainable):
    return tf.compat.v1.get_variable(
        "features", [batch, dim], tf.float32,
        initializer=tf.compat.v1.random_normal_initializer(seed=2), trainable=trainable)


def build_cl_term(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=False)
    loss = cl.center_loss(labels, features, alpha=ALPHA, num_classes=num_classes)
    return tf.group(loss), [cl.get_centers()], None


def build_dense_distmat_term(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=True)
    centers = trainable_centers(num_classes, dim)
    loss = distmat_center_loss(labels, features, centers)
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def build_floor_gather_scatter(batch, dim, num_classes):
    """ResourceGather of B rows, ResourceScatterSub of B rows, nothing else.

    Neither op reads the whole table, and no dense read of it exists in the
    graph: a dense read alive while the scatter runs would make the scatter
    copy all C x D floats first (copy-on-write). So the step ends on the
    scatter op itself; `tf.compat.v1.scatter_sub` would return a variable
    whose graph element is such a dense read.
    """
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=False)
    table = tf.compat.v1.get_variable(
        "centers", [num_classes, dim], tf.float32,
        initializer=tf.compat.v1.zeros_initializer(), trainable=False,
        use_resource=True)
    rows = table.sparse_read(labels)
    scatter = tf.raw_ops.ResourceScatterSub(
        resource=table.handle, indices=labels, updates=ALPHA * (rows - features))
    return scatter, [table], None


BUILDERS = {name: globals()[f"build_{name}"] for name in VARIANTS}


def variable_bytes(variable):
    return variable.shape.num_elements() * variable.dtype.base_dtype.size


def slot_bytes(optimizer, variable):
    if optimizer is None:
        return 0
    slots = (optimizer.get_slot(variable, name) for name in optimizer.get_slot_names())
    return sum(variable_bytes(slot) for slot in slots if slot is not None)


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_variant(variant, num_classes, batch, dim, repeats):
    """One variant in this (fresh) process; returns its results row."""
    tf.compat.v1.disable_eager_execution()
    base_rss = max_rss_mb()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        step, centers, optimizer = BUILDERS[variant](batch, dim, num_classes)
        checksum = [tf.reduce_sum(table) for table in centers]
        init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(init)
        before = session.run(checksum)
        warm = []
        for _ in range(WARMUP):
            start = time.perf_counter()
            session.run(step)
            warm.append(time.perf_counter() - start)
        affordable = int(SECONDS_PER_VARIANT / statistics.median(warm))
        repeats = max(min(repeats, affordable), min(repeats, MIN_REPEATS))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(step)
            times.append(time.perf_counter() - start)
        # The steps did move the centers (cl's update rides on its loss tensor).
        centers_moved = all(a != b for a, b in zip(before, session.run(checksum)))
    times.sort()
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    return {
        "num_classes": num_classes,
        "variant": variant,
        "median_step_s": statistics.median(times),
        "p10_step_s": quantile(times, 0.1),
        "p90_step_s": quantile(times, 0.9),
        "repeats": repeats,
        "peak_rss_mb": round(max_rss_mb(), 1),
        "rss_growth_mb": round(max_rss_mb() - base_rss, 1),
        "centers_tables": len(centers),
        "centers_bytes": sum(variable_bytes(v) for v in centers),
        "center_slot_bytes": sum(slot_bytes(optimizer, v) for v in centers),
        "all_variable_bytes": sum(variable_bytes(v) for v in graph.get_collection(
            tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)),
        "centers_moved": centers_moved if centers else None,
        "batch": batch,
        "dim": dim,
        "device": "GPU" if "GPU" in devices else "CPU",
    }


def run_isolated(*args):
    """run_variant in a freshly spawned process: own graph, own peak RSS."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_variant, *args).result()


def machine():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    return {"cpu": model, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def ratios(rows, largest, smallest):
    """The four checks: (label, value, floor text, met) — reported, never asserted."""
    median = {(r["variant"], r["num_classes"]): r["median_step_s"] for r in rows}

    def ratio(a, b):
        if a in median and b in median:
            return median[a] / median[b]
        return None

    checks = [
        (f"cl / softmax at C={largest}",
         ratio(("cl", largest), ("softmax", largest)), "<= 1.05", lambda v: v <= 1.05),
        (f"dense_distmat_term / cl_term at C={largest}",
         ratio(("dense_distmat_term", largest), ("cl_term", largest)), ">= 20",
         lambda v: v >= 20),
        (f"cl_term / floor_gather_scatter at C={largest}",
         ratio(("cl_term", largest), ("floor_gather_scatter", largest)), "<= 3",
         lambda v: v <= 3),
        (f"floor_gather_scatter C={largest} / C={smallest}",
         ratio(("floor_gather_scatter", largest), ("floor_gather_scatter", smallest)),
         "~1 (<= 1.5)", lambda v: v <= 1.5),
    ]
    return [(label, value, floor, None if value is None else bool(met(value)))
            for label, value, floor, met in checks]


def markdown(rows, checks, info, elapsed_s):
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, device {rows[0]['device']}; "
        f"TensorFlow {info['tensorflow']}, Python {info['python']}. "
        f"B={rows[0]['batch']}, D={rows[0]['dim']}, Momentum({LEARNING_RATE}, "
        f"{MOMENTUM}), lambda={LAMBDA}, alpha={ALPHA}. Whole run {elapsed_s:.0f} s.",
        "",
        "| C | variant | median ms | p10 ms | p90 ms | repeats | peak RSS MB "
        "| RSS growth MB | centers MB | center slots MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_classes']} | {r['variant']} | {r['median_step_s'] * 1e3:.2f} "
            f"| {r['p10_step_s'] * 1e3:.2f} | {r['p90_step_s'] * 1e3:.2f} | {r['repeats']} "
            f"| {r['peak_rss_mb']:.0f} | {r['rss_growth_mb']:.0f} "
            f"| {r['centers_bytes'] / 2**20:.1f} | {r['center_slot_bytes'] / 2**20:.1f} |")
    lines += ["", "Ratios of medians (floors are checks, not asserts):", ""]
    for label, value, floor, met in checks:
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        lines.append(f"- {label}: {shown} (floor {floor}: {verdict})")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench", help="output folder")
    parser.add_argument("--classes", default="1000,10000,100000",
                        help="comma-separated numbers of classes")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed steps per variant (fewer for slow ones)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny sizes, few repeats")
    args = parser.parse_args()
    if args.quick:
        args.classes, args.batch, args.dim, args.repeats = "10,100", 8, 16, 3
    classes = [int(c) for c in args.classes.split(",")]

    start = time.perf_counter()
    rows = []
    for num_classes in classes:
        for variant in VARIANTS:
            row = run_isolated(variant, num_classes, args.batch, args.dim, args.repeats)
            print(f"C={num_classes:>6} {variant:<21} {row['median_step_s'] * 1e3:9.2f} ms"
                  f"  peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
            rows.append(row)
    elapsed = time.perf_counter() - start

    checks = ratios(rows, max(classes), min(classes))
    info = machine()
    table = markdown(rows, checks, info, elapsed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "results.md").write_text(table)
    print()
    print(table, end="")
    print(f"Wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
