"""Cost of cl.keras3.CenterLoss per training step, at C = 10^3 and 10^5.

Run by `make bench` once per backend:
    .venv/bin/python bench/bench_keras3.py --backend tensorflow
    KERAS_BACKEND=jax .venv-jax/bin/python bench/bench_keras3.py --backend jax
    KERAS_BACKEND=torch .venv-jax/bin/python bench/bench_keras3.py --backend torch
Writes DIR/keras3_<backend>.json and .md and prints them. Ratios only: the
absolute times depend on the machine.

Three models per number of classes, stepped in turn (one train_on_batch
each per round, so load bursts hit all alike): `base`, an embedding layer
and a 1-unit head; `cl`, the same with the CenterLoss layer on the
embedding; `floor`, the same with a layer doing only a gather + scatter_sub
of B rows on its own [C, D] table. The term's cost in the step is
median(cl) - median(base); the floor's is median(floor) - median(base). A
dense read of the table, or a segment sum over all C classes, would make the
term grow ~100x from 10^3 to 10^5.

Then, measured alike and stepped in turn once the models' thread pools are
idle, on the same backend: the bare floor (gather B rows of a [C, D] float32
table and scatter-subtract B rows back) and the bare term (the layer's
`term`: label checks, read, loss and update), each compiled the same way
(tf.function; jax.jit with the table donated; eager torch under no_grad).
The goal (term <= 2x floor at 10^5) is judged on those two. The term in the
Keras step against the bare floor is shown too, but is not alike: the step
adds the term's gradient and the Keras layer call around it, the bare floor
none of that (on JAX and torch that gap read 37-41x).
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
VARIANTS = ("base", "cl", "floor")
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


def build(keras, num_classes, variant):
    """`base`, `cl` (base + CenterLoss) or `floor` (base + the floor layer)."""
    from cl.keras3 import CenterLoss
    x = keras.Input((DIM,))
    y = keras.Input((), dtype="int32")
    embedding = keras.layers.Dense(DIM)(x)
    layer = None
    if variant == "cl":
        layer = CenterLoss(num_classes, alpha=0.5, weight=0.01)
        embedding = layer([embedding, y])
    elif variant == "floor":
        layer = floor_layer(keras, keras.backend.backend(), num_classes)
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


def term_step(keras, backend, num_classes, labels, features):
    """A callable doing one `CenterLoss.term` (label checks, read, loss and
    update) on a fresh layer, compiled as `floor_step` compiles the floor:
    tf.function, jax.jit with the table donated (in a StatelessScope, as in
    Keras's JAX step), eager torch under no_grad."""
    from cl.keras3 import CenterLoss
    layer = CenterLoss(num_classes, alpha=0.5, weight=0.01)
    layer.build([(None, DIM), (None,)])
    moved = lambda: bool(np.any(keras.ops.convert_to_numpy(layer.centers.value) != 0))  # noqa: E731
    if backend == "tensorflow":
        import tensorflow as tf
        labels, features = tf.constant(labels), tf.constant(features)
        return tf.function(lambda: layer.term(labels, features, training=True)), moved
    if backend == "torch":
        import torch
        labels, features = torch.as_tensor(labels), torch.as_tensor(features)

        def step():
            with torch.no_grad():
                layer.term(labels, features, training=True)
        return step, moved
    import jax
    import jax.numpy as jnp
    labels, features = jnp.asarray(labels), jnp.asarray(features)

    @functools.partial(jax.jit, donate_argnums=0)
    def jitted(table):
        with keras.StatelessScope(state_mapping=[(layer.centers, table)]) as scope:
            loss = layer.term(labels, features, training=True)
        return scope.get_current_value(layer.centers), loss

    def run():
        table, loss = jitted(layer.centers.value)
        layer.centers.assign(table)
        table.block_until_ready()
    return run, moved


def time_alike(keras, backend, num_classes, labels, features, repeats):
    """Medians of the bare floor and the bare term, stepped in turn; and
    whether each moved its table."""
    floor, value = floor_step(keras, backend, num_classes, labels, features)
    steps = {"floor": (floor, lambda: bool(np.any(value() != 0))),
             "term": term_step(keras, backend, num_classes, labels, features)}
    for step, _ in steps.values():
        for _ in range(WARMUP):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, _) in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(t / f for t, f in zip(times["term"], times["floor"]))
    return ({name: statistics.median(t) for name, t in times.items()}, ratio,
            {name: moved() for name, (_, moved) in steps.items()})


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
        for variant in VARIANTS:
            model, layer = build(keras, num_classes, variant)
            for _ in range(WARMUP):
                model.train_on_batch([x, labels], targets)
            runs[num_classes, variant] = dict(model=model, layer=layer, labels=labels, times=[])
    for _ in range(repeats):
        for run in runs.values():
            start = time.perf_counter()
            run["model"].train_on_batch([x, run["labels"]], targets)
            run["times"].append(time.perf_counter() - start)

    # The bare floor and term apart from the models, once their thread pools
    # are idle (small ops timed right after big ones read the pools'
    # spinning, not their own cost).
    time.sleep(1.0)
    alike = {c: time_alike(keras, args.backend, c, runs[c, "cl"]["labels"], x, 3 * repeats)
             for c in classes}
    rows = []
    for num_classes in classes:
        medians = {v: statistics.median(runs[num_classes, v]["times"]) for v in VARIANTS}
        base_s, cl_s, floor_model_s = medians["base"], medians["cl"], medians["floor"]
        bare, bare_ratio, moved = alike[num_classes]
        centers = keras.ops.convert_to_numpy(runs[num_classes, "cl"]["layer"].centers.value)
        rows.append(dict(
            backend=args.backend, num_classes=num_classes, batch=BATCH, dim=DIM,
            base_median_s=base_s, cl_median_s=cl_s, floor_model_median_s=floor_model_s,
            term_s=cl_s - base_s, floor_in_step_s=floor_model_s - base_s,
            cl_over_base=cl_s / base_s, cl_over_floor_model=cl_s / floor_model_s,
            floor_s=bare["floor"], term_bare_s=bare["term"],
            term_bare_over_floor=bare_ratio,
            term_over_floor=(cl_s - base_s) / bare["floor"],
            centers_moved=bool(np.any(centers != 0)), floor_moved=moved["floor"],
            term_bare_moved=moved["term"]))
    small, large = rows[0], rows[-1]
    term_ratio = large["term_s"] / max(small["term_s"], 1e-4)
    step_ratio = large["cl_median_s"] / small["cl_median_s"]
    bare_ratio = large["term_bare_over_floor"]
    lines = [f"## cl.keras3.CenterLoss, {args.backend} backend (keras {keras.__version__}, "
             f"batch {BATCH}, dim {DIM}, median of {repeats})", "",
             "In the Keras step (train_on_batch, models stepped in turn): `term` = cl step - "
             "base step, `floor in step` = floor-layer step - base step. Bare, compiled "
             "alike and stepped in turn: `term bare` = CenterLoss.term (checks, read, loss, "
             "update), `floor` = gather + scatter_sub of B rows.", "",
             "| num_classes | cl step / base step | term ms | floor in step ms "
             "| term bare ms | floor ms | term bare / floor | term / floor | centers moved |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['num_classes']} | {r['cl_over_base']:.2f}x | {r['term_s'] * 1e3:.3f} "
              f"| {r['floor_in_step_s'] * 1e3:.3f} | {r['term_bare_s'] * 1e3:.3f} "
              f"| {r['floor_s'] * 1e3:.3f} | {r['term_bare_over_floor']:.2f}x "
              f"| {r['term_over_floor']:.2f}x | {r['centers_moved']} |" for r in rows]
    lines += ["", f"cl step at C={large['num_classes']} / at C={small['num_classes']}: "
                  f"{step_ratio:.2f}x (check: <= 1.5x: {'ok' if step_ratio <= 1.5 else 'FAILED'})",
              f"term (cl - base) at C={large['num_classes']} / at C={small['num_classes']}: "
              f"{term_ratio:.2f}x (term under 0.1 ms counts as 0.1 ms; noisy when tiny)",
              f"term bare / floor at C={large['num_classes']}, measured alike: {bare_ratio:.2f}x "
              f"(goal: <= 2x: {'met' if bare_ratio <= 2 else 'NOT met'}; floor "
              f"{large['floor_s'] / small['floor_s']:.2f}x and term bare "
              f"{large['term_bare_s'] / small['term_bare_s']:.2f}x from C={small['num_classes']})",
              f"term in the Keras step / bare floor at C={large['num_classes']}: "
              f"{large['term_over_floor']:.2f}x (not alike: the term pays the Keras "
              f"step's costs around it, the floor none)",
              f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"keras3_{args.backend}.json").write_text(json.dumps(
        dict(rows=rows, step_ratio=step_ratio, term_ratio=term_ratio,
             term_bare_over_floor=bare_ratio, term_over_floor=large["term_over_floor"]),
        indent=1))
    (out / f"keras3_{args.backend}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
