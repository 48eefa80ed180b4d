"""Cost of cl.keras3.CenterLoss per training step, at C = 10^3 and 10^5.

Run by `make bench` once per backend:
    .venv/bin/python bench/bench_keras3.py --backend tensorflow
    KERAS_BACKEND=jax .venv-jax/bin/python bench/bench_keras3.py --backend jax
    KERAS_BACKEND=torch .venv-jax/bin/python bench/bench_keras3.py --backend torch
Writes DIR/keras3_<backend>.json and .md, and prints them and the goals
(bench/goals.py). Ratios only: the absolute times depend on the machine.
Every ratio is the median of per-round ratios of steps taken in turn.

1. Term against its floor (B = 256, D = 512): the bare floor (gather B rows
   of a [C, D] float32 table, scatter-subtract B rows back) and the bare
   term (the layer's `term`: label checks, read, loss and update), each
   compiled the same way (tf.function; jax.jit with the table donated, the
   term in a StatelessScope as in Keras's JAX step; eager torch under
   no_grad), both given the labels and features as arguments (captured
   constants would let a compiler fold the label checks away).
2. The whole Keras step with the layer against the same model without it:
   an MLP (128 -> 256 relu -> 128 embedding -> C = 1000 logits, softmax
   cross-entropy, SGD), B = 256, `train_on_batch`, the models stepped in
   turn; for reference the same model with a layer that only passes the
   embedding through (Keras's own cost of one more layer) and with the
   floor's layer (its gather + scatter, no loss).
3. Growth with C: models `base` (an embedding layer and a 1-unit head),
   `cl` (the same with the layer) and `floor` (with a layer doing only the
   floor's gather + scatter in the step), at each C; a dense read of the
   table or a segment sum over all C classes would make the cl step grow
   ~100x from 10^3 to 10^5.
"""

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import goals
import numpy as np
from timing import in_turn

BATCH, DIM = 256, 512
CLASSES = (1_000, 100_000)
VARIANTS = ("base", "cl", "floor")
FIT_INPUTS, FIT_HIDDEN, FIT_DIM, FIT_CLASSES = 128, 256, 128, 1_000
WARMUP = 5


def floor_layer(keras, backend, num_classes):
    """A layer doing the floor's gather + scatter_sub of B rows on its own
    [C, D] table in the Keras step, as CenterLoss does its term there."""

    class FloorLayer(keras.layers.Layer):
        def build(self, input_shape):
            self.centers = self.add_weight(shape=(num_classes, input_shape[0][-1]),
                                           initializer="zeros", trainable=False)

        def call(self, inputs):
            embedding, labels = inputs
            features = keras.ops.stop_gradient(embedding)
            if backend == "tensorflow":
                import tensorflow as tf
                rows = tf.gather(self.centers.value, labels)
                self.centers.value.scatter_sub(tf.IndexedSlices(0.5 * (rows - features), labels))
            elif backend == "torch":
                import torch
                with torch.no_grad():
                    rows = torch.index_select(self.centers.value, 0, labels)
                    self.centers.value.index_add_(0, labels, -0.5 * (rows - features))
            else:
                table = self.centers.value
                self.centers.assign(table.at[labels].add(-0.5 * (table[labels] - features)))
            return embedding
    return FloorLayer()


def growth_model(keras, num_classes, variant):
    """`base`, `cl` (base + CenterLoss) or `floor` (base + the floor layer)."""
    from cl.keras3 import CenterLoss
    x, y = keras.Input((DIM,)), keras.Input((), dtype="int32")
    embedding = keras.layers.Dense(DIM)(x)
    layer = None
    if variant == "cl":
        layer = CenterLoss(num_classes, alpha=0.5, weight=0.01)
    elif variant == "floor":
        layer = floor_layer(keras, keras.backend.backend(), num_classes)
    if layer is not None:
        embedding = layer([embedding, y])
    model = keras.Model([x, y], keras.layers.Dense(1)(embedding))
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    return model, layer


def passthrough_layer(keras):
    """A layer called on `[embedding, labels]` that returns the embedding:
    what Keras itself spends on one more two-input layer in the step."""
    class Passthrough(keras.layers.Layer):
        def call(self, inputs):
            return inputs[0]
    return Passthrough()


def fit_model(keras, variant):
    """The MLP of the fit-step row: "without" a layer on its embedding,
    "with" the CenterLoss layer, or for reference a "passthrough" layer or
    the "floor" layer (the term's gather + scatter, no loss, no checks)."""
    from cl.keras3 import CenterLoss
    x, y = keras.Input((FIT_INPUTS,)), keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(FIT_HIDDEN, activation="relu")(x)
    embedding = keras.layers.Dense(FIT_DIM)(hidden)
    layer = {"with": lambda: CenterLoss(FIT_CLASSES, alpha=0.5, weight=0.01),
             "passthrough": lambda: passthrough_layer(keras),
             "floor": lambda: floor_layer(keras, keras.backend.backend(), FIT_CLASSES),
             "without": lambda: None}[variant]()
    if layer is not None:
        embedding = layer([embedding, y])
    model = keras.Model([x, y], keras.layers.Dense(FIT_CLASSES)(embedding))
    model.compile(keras.optimizers.SGD(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def bare_steps(keras, backend, num_classes):
    """`{"floor": step, "term": step}`, each `step(labels, features)` compiled
    alike, and `{name: () -> whether its table moved}`."""
    from cl.keras3 import CenterLoss
    layer = CenterLoss(num_classes, alpha=0.5, weight=0.01)
    layer.build([(None, DIM), (None,)])
    term_value = lambda: keras.ops.convert_to_numpy(layer.centers.value)  # noqa: E731
    if backend == "tensorflow":
        import tensorflow as tf
        table = tf.Variable(tf.zeros([num_classes, DIM]), trainable=False)

        @tf.function
        def floor(labels, features):
            rows = tf.raw_ops.ResourceGather(resource=table.handle, indices=labels,
                                             dtype=tf.float32)
            tf.raw_ops.ResourceScatterSub(resource=table.handle, indices=labels,
                                          updates=0.5 * (rows - features))

        term = tf.function(lambda labels, features: layer.term(labels, features, training=True))
        floor_value = table.numpy
    elif backend == "torch":
        import torch
        table = torch.zeros((num_classes, DIM))

        def floor(labels, features):
            with torch.no_grad():
                rows = table.index_select(0, labels)
                table.index_add_(0, labels, -0.5 * (rows - features))

        def term(labels, features):
            with torch.no_grad():
                layer.term(labels, features, training=True)
        floor_value = table.numpy
    else:
        import jax
        import jax.numpy as jnp
        state = {"floor": jnp.zeros((num_classes, DIM), jnp.float32),
                 "term": layer.centers.value}

        @functools.partial(jax.jit, donate_argnums=0)
        def floor_jit(table, labels, features):
            return table.at[labels].add(-0.5 * (table[labels] - features))

        @functools.partial(jax.jit, donate_argnums=0)
        def term_jit(table, labels, features):
            with keras.StatelessScope(state_mapping=[(layer.centers, table)]) as scope:
                loss = layer.term(labels, features, training=True)
            return scope.get_current_value(layer.centers), loss

        def floor(labels, features):
            state["floor"] = floor_jit(state["floor"], labels, features)
            state["floor"].block_until_ready()

        def term(labels, features):  # the table kept as the floor's is (no Variable.assign)
            state["term"], loss = term_jit(state["term"], labels, features)
            loss.block_until_ready()
        floor_value = lambda: np.asarray(state["floor"])  # noqa: E731
        term_value = lambda: np.asarray(state["term"])  # noqa: E731
    moved = {"floor": lambda: bool(np.any(floor_value() != 0)),
             "term": lambda: bool(np.any(term_value() != 0))}
    return {"floor": floor, "term": term}, moved


def paired(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


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
    convert = keras.ops.convert_to_tensor
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, DIM)).astype("float32")
    labels = {c: rng.integers(0, c, BATCH).astype("int32") for c in classes}

    # 3. Growth with C, in the Keras step.
    targets = np.zeros((BATCH, 1), "float32")
    runs = {(c, v): growth_model(keras, c, v) for c in classes for v in VARIANTS}
    steps = {key: functools.partial(model.train_on_batch, [x, labels[key[0]]], targets)
             for key, (model, _) in runs.items()}
    growth = in_turn(steps, repeats, WARMUP)

    # 2. The fit step with the layer / without it.
    fit_x = rng.normal(size=(BATCH, FIT_INPUTS)).astype("float32")
    fit_y = rng.integers(0, FIT_CLASSES, BATCH).astype("int32")
    fit_steps = {name: functools.partial(fit_model(keras, name).train_on_batch,
                                         [fit_x, fit_y], fit_y)
                 for name in ("with", "without", "passthrough", "floor")}
    fit = in_turn(fit_steps, 10 * repeats, WARMUP)

    # 1. The bare term and floor, once the models' thread pools are idle
    # (small ops timed right after big ones read the pools' spinning).
    time.sleep(1.0)
    bare = {}
    for c in classes:
        step_of, moved = bare_steps(keras, args.backend, c)
        arguments = (convert(labels[c]), convert(x))
        times = in_turn({name: functools.partial(step, *arguments)
                         for name, step in step_of.items()}, 10 * repeats, WARMUP)
        bare[c] = times, {name: check() for name, check in moved.items()}

    rows = []
    for c in classes:
        medians = {v: statistics.median(growth[c, v]) for v in VARIANTS}
        times, moved = bare[c]
        centers = keras.ops.convert_to_numpy(runs[c, "cl"][1].centers.value)
        rows.append(dict(
            backend=args.backend, num_classes=c, batch=BATCH, dim=DIM,
            base_median_s=medians["base"], cl_median_s=medians["cl"],
            floor_model_median_s=medians["floor"],
            cl_over_base=paired(growth, (c, "cl"), (c, "base")),
            floor_s=statistics.median(times["floor"]), term_bare_s=statistics.median(times["term"]),
            term_bare_over_floor=paired(times, "term", "floor"),
            centers_moved=bool(np.any(centers != 0)), floor_moved=moved["floor"],
            term_bare_moved=moved["term"]))
    small, large = rows[0], rows[-1]
    data = dict(
        rows=rows, step_ratio=large["cl_median_s"] / small["cl_median_s"],
        term_bare_over_floor=large["term_bare_over_floor"],
        fit_step_with_over_without=paired(fit, "with", "without"),
        fit_step_passthrough_over_without=paired(fit, "passthrough", "without"),
        fit_step_floor_over_without=paired(fit, "floor", "without"),
        fit_step=dict(batch=BATCH, inputs=FIT_INPUTS, hidden=FIT_HIDDEN, dim=FIT_DIM,
                      classes=FIT_CLASSES, rounds=len(fit["with"]),
                      with_median_s=statistics.median(fit["with"]),
                      without_median_s=statistics.median(fit["without"])),
        keras=keras.__version__, machine=platform.machine(), cpus=os.cpu_count(),
        python=platform.python_version())
    lines = [f"## cl.keras3.CenterLoss, {args.backend} backend (keras {keras.__version__})", "",
             f"Bare, compiled alike, stepped in turn ({10 * repeats} rounds, B={BATCH}, "
             f"D={DIM}): `term` = CenterLoss.term (checks, read, loss, update), `floor` = "
             f"gather + scatter_sub of B rows. In the Keras step ({repeats} rounds): the cl "
             f"model's step against the same model without the layer.", "",
             "| num_classes | term ms | floor ms | term / floor | cl step / base step "
             "| centers moved |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['num_classes']} | {r['term_bare_s'] * 1e3:.3f} | {r['floor_s'] * 1e3:.3f} "
              f"| {r['term_bare_over_floor']:.2f}x | {r['cl_over_base']:.2f}x "
              f"| {r['centers_moved'] and r['term_bare_moved'] and r['floor_moved']} |"
              for r in rows]
    fit_row = data["fit_step"]
    lines += ["", f"fit step (MLP {FIT_INPUTS}-{FIT_HIDDEN}-{FIT_DIM}-{FIT_CLASSES}, B={BATCH}, "
                  f"train_on_batch, {fit_row['rounds']} rounds): with the layer "
                  f"{fit_row['with_median_s'] * 1e3:.3f} ms, without "
                  f"{fit_row['without_median_s'] * 1e3:.3f} ms, with / without "
                  f"{data['fit_step_with_over_without']:.2f}x; for reference, a passthrough "
                  f"layer / without {data['fit_step_passthrough_over_without']:.2f}x, the "
                  f"floor layer / without {data['fit_step_floor_over_without']:.2f}x",
              f"cl step at C={large['num_classes']} / at C={small['num_classes']}: "
              f"{data['step_ratio']:.2f}x",
              f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}", ""]
    lines += goals.report(f"keras3_{args.backend}.json", data)
    if args.quick:
        lines.append("--quick: toy sizes, a smoke test; the goals mean nothing here.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"keras3_{args.backend}.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / f"keras3_{args.backend}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
