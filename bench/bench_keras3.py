"""Cost of cl.keras3.CenterLoss per training step, at C = 10^3 and 10^5.

Run by `make bench` once per backend:
    .venv/bin/python bench/bench_keras3.py --backend tensorflow
    KERAS_BACKEND=jax .venv-jax/bin/python bench/bench_keras3.py --backend jax
    KERAS_BACKEND=torch .venv-jax/bin/python bench/bench_keras3.py --backend torch
Writes DIR/keras3_<backend>.json and .md and prints them. Ratios only: the
absolute times depend on the machine.

Two models per number of classes, stepped in turn (one train_on_batch each
per round, so load bursts hit all alike): `base`, an embedding layer and a
1-unit head, and `cl`, the same with the CenterLoss layer on the embedding.
The term's cost is median(cl) - median(base). A dense read of the table, or
a segment sum over all C classes, would make it grow ~100x from 10^3 to 10^5.

The floor on the same backend: gather B rows of a [C, D] float32 table and
scatter-subtract B rows back, compiled (tf.function / jax.jit with the table
donated), nothing else: the least any per-class table can cost. It is timed
after the models are done and their thread pools idle (small ops timed right
after big ones read the pools' spinning, not their own cost).
"""

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

BATCH, DIM = 256, 512
CLASSES = (1_000, 100_000)
WARMUP = 5


def build(keras, num_classes, with_term):
    from cl.keras3 import CenterLoss
    x = keras.Input((DIM,))
    y = keras.Input((), dtype="int32")
    embedding = keras.layers.Dense(DIM)(x)
    layer = None
    if with_term:
        layer = CenterLoss(num_classes, alpha=0.5, weight=0.01)
        embedding = layer([embedding, y])
    model = keras.Model([x, y], keras.layers.Dense(1)(embedding))
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    return model, layer


def floor_step(keras, backend, num_classes, labels, features):
    """A callable doing one compiled gather + scatter_sub of B rows."""
    if backend == "tensorflow":
        import tensorflow as tf
        table = tf.Variable(tf.zeros([num_classes, DIM]), trainable=False)
        labels, features = tf.constant(labels), tf.constant(features)

        @tf.function
        def step():
            rows = tf.raw_ops.ResourceGather(resource=table.handle, indices=labels,
                                             dtype=tf.float32)
            tf.raw_ops.ResourceScatterSub(resource=table.handle, indices=labels,
                                          updates=0.5 * (rows - features))
        return step, table.numpy
    if backend == "torch":
        import torch
        table = torch.zeros((num_classes, DIM))
        labels = torch.as_tensor(labels, dtype=torch.int64)
        features = torch.as_tensor(features)

        def step():
            with torch.no_grad():
                rows = table.index_select(0, labels)
                table.index_add_(0, labels, -0.5 * (rows - features))
        return step, table.numpy
    import jax
    import jax.numpy as jnp
    state = {"table": jnp.zeros((num_classes, DIM), jnp.float32)}
    labels, features = jnp.asarray(labels), jnp.asarray(features)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(table):
        return table.at[labels].add(-0.5 * (table[labels] - features))

    def run():
        state["table"] = step(state["table"])
        state["table"].block_until_ready()
    return run, lambda: np.asarray(state["table"])


def time_floor(keras, backend, num_classes, labels, features, repeats):
    step, value = floor_step(keras, backend, num_classes, labels, features)
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), bool(np.any(value() != 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], required=True)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="C = 10, 1000 and 5 repeats")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    if keras.backend.backend() != args.backend:
        raise SystemExit(f"KERAS_BACKEND is {keras.backend.backend()}, not {args.backend}")
    classes, repeats = ((10, 1_000), 5) if args.quick else (CLASSES, args.repeats)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, DIM)).astype("float32")
    targets = np.zeros((BATCH, 1), "float32")
    runs = {}
    for num_classes in classes:
        labels = rng.integers(0, num_classes, BATCH).astype("int32")
        for variant in ("base", "cl"):
            model, layer = build(keras, num_classes, variant == "cl")
            for _ in range(WARMUP):
                model.train_on_batch([x, labels], targets)
            runs[num_classes, variant] = dict(model=model, layer=layer, labels=labels, times=[])
    for _ in range(repeats):
        for run in runs.values():
            start = time.perf_counter()
            run["model"].train_on_batch([x, run["labels"]], targets)
            run["times"].append(time.perf_counter() - start)

    # The floor apart from the models, once their thread pools are idle.
    time.sleep(1.0)
    floors = {c: time_floor(keras, args.backend, c, runs[c, "cl"]["labels"], x, 3 * repeats)
              for c in classes}
    rows = []
    for num_classes in classes:
        base, cl = runs[num_classes, "base"], runs[num_classes, "cl"]
        floor_s, floor_moved = floors[num_classes]
        centers = keras.ops.convert_to_numpy(cl["layer"].centers.value)
        base_s, cl_s = statistics.median(base["times"]), statistics.median(cl["times"])
        rows.append(dict(backend=args.backend, num_classes=num_classes, batch=BATCH, dim=DIM,
                         base_median_s=base_s, cl_median_s=cl_s, term_s=cl_s - base_s,
                         cl_over_base=cl_s / base_s, floor_s=floor_s,
                         term_over_floor=(cl_s - base_s) / floor_s,
                         centers_moved=bool(np.any(centers != 0)), floor_moved=floor_moved))
    small, large = rows[0], rows[-1]
    term_ratio = large["term_s"] / max(small["term_s"], 1e-4)
    step_ratio = large["cl_median_s"] / small["cl_median_s"]
    lines = [f"## cl.keras3.CenterLoss, {args.backend} backend (keras {keras.__version__}, "
             f"batch {BATCH}, dim {DIM}, median of {repeats})", "",
             "| num_classes | cl step / base step | term (cl - base) / floor | centers moved |",
             "|---|---|---|---|"]
    lines += [f"| {row['num_classes']} | {row['cl_over_base']:.2f}x | {row['term_over_floor']:.2f}x "
              f"| {row['centers_moved']} |" for row in rows]
    floor_ratio = large["term_over_floor"]
    lines += ["", f"cl step at C={large['num_classes']} / at C={small['num_classes']}: "
                  f"{step_ratio:.2f}x (check: <= 1.5x: {'ok' if step_ratio <= 1.5 else 'FAILED'})",
              f"term (cl - base) at C={large['num_classes']} / at C={small['num_classes']}: "
              f"{term_ratio:.2f}x (term under 0.1 ms counts as 0.1 ms; noisy when tiny)",
              f"term / gather+scatter floor at C={large['num_classes']}: {floor_ratio:.2f}x "
              f"(goal: <= 2x: {'met' if floor_ratio <= 2 else 'NOT met'}; floor "
              f"{large['floor_s'] / small['floor_s']:.2f}x from C={small['num_classes']})",
              f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"keras3_{args.backend}.json").write_text(json.dumps(
        dict(rows=rows, step_ratio=step_ratio, term_ratio=term_ratio,
             term_over_floor=floor_ratio), indent=1))
    (out / f"keras3_{args.backend}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
