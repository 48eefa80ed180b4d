"""Keras 3 on JAX under `keras.distribution.ModelParallel` over 4 forced
host devices, meshes (batch 2, model 2) and (batch 1, model 4), the centers
split by rows on the model axis (`layout_map[".*centers"] = ("model", None)`):

* each device holds C/S rows of the table (S the model axis; each
  addressable shard of the variable's value), before and after training;
* after each step (`fit`, `train_on_batch`; the layer in a functional model
  and `CenterLossModel`) the centers equal the paper's rule on the global
  batch; `evaluate` and `predict` move nothing;
* the compiled train step communicates nothing proportional to C (no
  all-gather of the table: XLA reads and writes the local rows and reduces
  `[batch, dim]` values);
* XLA does not rematerialise the labels for the label check's host
  callback, and a bad label still warns (RuntimeWarning naming it), gives
  a NaN loss and is left out of the update.

Run by tests/eager/test_keras3_jax_table.py in a subprocess (the device
count and the HLO dump folder must be set before JAX initialises); the
test counts XLA's rematerialisation warnings in this process's stderr
(shown with TF_CPP_MIN_LOG_LEVEL <= 1):

    KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=1 python keras3_jax_model_parallel.py <tests/support> <dump dir>

Prints one RESULT line (JSON).
"""

import json
import os
import pathlib
import sys
import warnings

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

C, D, B, ALPHA, STEPS = 8192, 8, 32, 0.5, 3  # C * D = 65536 >> B * D = 256


def distribution(shape):
    mesh = keras.distribution.DeviceMesh(shape, ("batch", "model"), devices=jax.devices())
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*centers"] = ("model", None)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def batches(rng):
    """Each step's global batch: duplicates, classes in both halves of the
    table (0, 7 / C/2, C - 1), most classes absent."""
    for step in range(STEPS):
        labels = rng.choice([0, 1, 7, 100 + step, C // 2, C // 2 + 1 + step, C - 1],
                            B).astype("int32")
        features = (rng.normal(size=(B, D)) + labels[:, None] % 5).astype("float32")
        yield labels, features


def layer_model():
    return keras3_models.layer_model(C, D, B, ALPHA, learning_rate=0.0)


def wrapped_model():
    return keras3_models.wrapped_model(C, D, ALPHA, learning_rate=0.0)


def rows_per_shard(centers):
    """The row count of each addressable shard of the table's value."""
    return sorted({shard.data.shape[0] for shard in centers.value.addressable_shards}) + \
        [len(centers.value.addressable_shards)]


def numpy_of(centers):
    return np.asarray(keras.ops.convert_to_numpy(centers))


def train(build, route):
    """Deviation from the rule on the global batch over the steps; what
    evaluate, predict and a step with a bad label do."""
    model, centers, data = build()
    report = {"rows_before": rows_per_shard(centers)}
    rng = np.random.default_rng(17)
    expected = np.zeros((C, D))
    deviation = 0.0
    for labels, features in batches(rng):
        inputs, targets = data(labels, features)
        if route == "fit":
            model.fit(inputs, targets, batch_size=B, epochs=1, shuffle=False, verbose=0)
        else:
            model.train_on_batch(inputs, targets)
        expected = reference.update_centers(labels, features, expected, ALPHA)
        deviation = max(deviation, float(np.max(np.abs(numpy_of(centers) - expected))))
    report.update(deviation=deviation, rows_after=rows_per_shard(centers))
    before = numpy_of(centers)
    model.evaluate(*data(labels, features), batch_size=B, verbose=0)
    report["moved_by_evaluate"] = float(np.max(np.abs(numpy_of(centers) - before)))
    model.predict(data(labels, features)[0], batch_size=B, verbose=0)
    report["moved_by_predict"] = float(np.max(np.abs(numpy_of(centers) - before)))
    report["bad_label"] = bad_label_step(model, centers, data, rng, before)
    return report


def bad_label_step(model, centers, data, rng, before):
    """One train_on_batch whose sample 5 has label C: NaN loss, a
    RuntimeWarning naming it, the other samples' update only."""
    labels, features = next(batches(rng))
    labels[5] = C
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = model.train_on_batch(*data(labels, features))
        got = numpy_of(centers)  # waits for the step, and so for its callback
        jax.effects_barrier()
    keep = np.arange(B) != 5
    expected = reference.update_centers(labels[keep], features[keep], before, ALPHA)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return {"loss": float(np.asarray(loss).reshape(-1)[0]),
            "deviation": float(np.max(np.abs(got - expected))),
            "warnings": messages}


def main():
    report = {"devices": len(jax.devices()), "classes": C, "dim": D, "global_batch": B}
    for name, build, route, mesh in (
            ("layer_fit", layer_model, "fit", (2, 2)),
            ("layer_train_on_batch", layer_model, "train_on_batch", (1, 4)),
            ("model_fit", wrapped_model, "fit", (1, 4)),
            ("model_train_on_batch", wrapped_model, "train_on_batch", (2, 2))):
        keras.distribution.set_distribution(distribution(mesh))
        before = set(compiled_steps(DUMP))
        report[name] = dict(mesh=list(mesh), **train(build, route))
        modules = [path for path in compiled_steps(DUMP) if path not in before]
        seen = [(op, shapes) for path in modules for op, shapes in collectives(path)]
        report[name].update(
            compiled_steps=len(modules),
            collectives=sorted({f"{op} {shapes}" for op, shapes in seen}),
            largest_elements=max((int(np.prod(s)) for _, shapes in seen for s in shapes),
                                 default=0),
            largest_dimension=max((d for _, shapes in seen for s in shapes for d in s), default=0),
            opcodes=sorted({op for op, _ in seen}))
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
