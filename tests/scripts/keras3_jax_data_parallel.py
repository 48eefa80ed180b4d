"""Keras 3 on JAX under `keras.distribution.DataParallel` over 4 forced host
devices: `cl.keras3.CenterLoss` (in a functional model) and
`cl.keras3.CenterLossModel` follow the paper's rule on the global batch
after every step, and the compiled train step communicates nothing
proportional to the number of classes C.

Run by tests/eager/test_keras3_jax_table.py in a subprocess (the device
count and the HLO dump folder must be set before JAX initialises):

    KERAS_BACKEND=jax python keras3_jax_data_parallel.py <tests/support> <dump dir>

The embedding is the model's input (an Identity layer), so the features of
each step are known; a small trainable head (3 outputs, not C) gives the
step gradients to all-reduce. Prints one RESULT line (JSON).
"""

import json
import os
import pathlib
import sys

DEVICES = 4
DUMP = pathlib.Path(sys.argv[2])
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={DEVICES} "
                           f"--xla_dump_to={DUMP} --xla_dump_hlo_module_re=.*train_step.*")
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference, the script helpers
import keras3_models  # noqa: E402
import reference  # noqa: E402
from hlo import collectives, compiled_steps  # noqa: E402

C, D, B, ALPHA, STEPS = 4099, 8, 32, 0.5, 4  # B global: 8 samples per device


def batches(rng):
    """Each step's global batch: heavy duplicates, the last class, classes
    on one device's shard only, most classes absent."""
    for step in range(STEPS):
        labels = rng.choice([0, 1, 2, 7, 100 + step, C - 1], B).astype("int32")
        labels[:8] = 3 + step  # only the first device's shard holds this class
        features = (rng.normal(size=(B, D)) + labels[:, None] % 5).astype("float32")
        yield labels, features


def per_device_rule(labels, features, centers):
    """What each device's own update would give (summed deltas): wrong."""
    new = centers.copy()
    for shard in range(DEVICES):
        part = slice(shard * B // DEVICES, (shard + 1) * B // DEVICES)
        new += reference.update_centers(labels[part], features[part], centers, ALPHA) - centers
    return new


def layer_model():
    return keras3_models.layer_model(C, D, B, ALPHA, learning_rate=0.1)


def wrapped_model():
    return keras3_models.wrapped_model(C, D, ALPHA, learning_rate=0.1)


def train(build, route):
    """Max deviation from the rule on the global batch over the steps, and
    the smallest deviation of the per-device rule (to show it would fail)."""
    model, centers, data = build()
    rng = np.random.default_rng(16)
    expected = np.zeros((C, D))
    deviation, per_device = 0.0, np.inf
    for labels, features in batches(rng):
        inputs, targets = data(labels, features)
        if route == "fit":
            model.fit(inputs, targets, batch_size=B, epochs=1, shuffle=False, verbose=0)
        else:
            model.train_on_batch(inputs, targets)
        wrong = per_device_rule(labels, features, expected)
        expected = reference.update_centers(labels, features, expected, ALPHA)
        got = keras.ops.convert_to_numpy(centers)
        deviation = max(deviation, float(np.max(np.abs(got - expected))))
        per_device = min(per_device, float(np.max(np.abs(got - wrong))))
    before = keras.ops.convert_to_numpy(centers)
    model.evaluate(*data(labels, features), batch_size=B, verbose=0)
    moved_by_evaluate = float(np.max(np.abs(keras.ops.convert_to_numpy(centers) - before)))
    return {"deviation": deviation, "per_device_rule_deviation": per_device,
            "moved_by_evaluate": moved_by_evaluate}


def main():
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    report = {"devices": len(jax.devices()), "classes": C, "dim": D, "global_batch": B}
    for name, build in (("layer", layer_model), ("model", wrapped_model)):
        for route in ("fit", "train_on_batch"):
            before = set(compiled_steps(DUMP))
            report[f"{name}_{route}"] = train(build, route)
            modules = [path for path in compiled_steps(DUMP) if path not in before]
            seen = [(op, shapes) for path in modules for op, shapes in collectives(path)]
            report[f"{name}_{route}"].update(
                compiled_steps=len(modules), collectives=sorted({f"{op} {shapes}" for op, shapes in seen}),
                largest_dimension=max((d for _, shapes in seen for s in shapes for d in s), default=0),
                opcodes=sorted({op for op, _ in seen}),
                # Per compiled step, its all-gathers of a [batch, dim] value.
                row_gathers=[sum(op.removesuffix("-start") == "all-gather" and len(shapes[0]) == 2
                                 and shapes[0][1] == D for op, shapes in collectives(path))
                             for path in modules])
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
