"""Cost of `cl.tf2.CenterLoss` per step against a bare gather + scatter.

Run by `make bench`:  .venv/bin/python bench/bench_tf2.py --out out/bench
Writes DIR/tf2.json and prints one line per number of classes and the goals
(bench/goals.py). Both steps are `tf.function`s on the same labels and
features (B = 256, D = 512): `term`, the module's call with training on
(checks, the read, the loss and the update), and `floor`, a ResourceGather
of B rows and a ResourceScatterSub of B rows on a table of its own. Stepped
in turn, after a warm-up; ratios are medians of the per-round ratios.
"""

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import goals
import numpy as np
from timing import in_turn

BATCH, DIM = 256, 512
CLASSES = (1_000, 100_000)
WARMUP = 10


def steps(tf, num_classes, labels, features):
    import cl.tf2
    center = cl.tf2.CenterLoss(num_classes, DIM, alpha=0.5)
    table = tf.Variable(tf.zeros([num_classes, DIM]), trainable=False)
    labels, features = tf.constant(labels), tf.constant(features)

    @tf.function
    def term():
        return center(labels, features, training=True)

    @tf.function
    def floor():
        rows = tf.raw_ops.ResourceGather(resource=table.handle, indices=labels, dtype=tf.float32)
        tf.raw_ops.ResourceScatterSub(resource=table.handle, indices=labels,
                                      updates=0.5 * (rows - features))

    return {"term": term, "floor": floor}, center


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="C = 10, 1000; 5 repeats")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    classes, repeats = ((10, 1_000), 5) if args.quick else (CLASSES, args.repeats)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH, DIM)).astype("float32")
    rows = []
    for num_classes in classes:
        labels = rng.integers(0, num_classes, BATCH).astype("int32")
        callables, center = steps(tf, num_classes, labels, features)
        times = in_turn(callables, repeats, WARMUP)
        rows.append(dict(
            num_classes=num_classes, batch=BATCH, dim=DIM, repeats=repeats,
            term_ms=statistics.median(times["term"]) * 1e3,
            floor_ms=statistics.median(times["floor"]) * 1e3,
            term_over_floor=statistics.median(t / f for t, f in zip(times["term"], times["floor"])),
            centers_moved=bool(np.any(center.centers.numpy() != 0))))
    data = dict(rows=rows, tensorflow=tf.__version__, machine=platform.machine(),
                cpus=os.cpu_count(), python=platform.python_version())
    lines = [f"cl.tf2 C={r['num_classes']:>6}: term {r['term_ms']:.3f} ms, floor "
             f"{r['floor_ms']:.3f} ms, term/floor {r['term_over_floor']:.2f}x, "
             f"centers moved: {r['centers_moved']}" for r in rows]
    lines += [""] + goals.report("tf2.json", data)
    if args.quick:
        lines.append("--quick: toy sizes, a smoke test; the goals mean nothing here.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tf2.json").write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
