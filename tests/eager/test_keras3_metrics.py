"""cl.keras3's center_distance and center_ratio against numpy, on the backend
KERAS_BACKEND names: the graph API's cl.center_metrics, from the centers
before each step's update, averaged over the epoch's samples as Keras
averages a compiled metric.

The embedding is the model's input, so every step's features are known and
the centers can be replayed in numpy.
"""

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip
from helpers import skip_torch_compiled_layer

keras = keras3_or_skip()

from cl.keras3 import CenterLoss, CenterLossModel  # noqa: E402

C, D, B, STEPS, ALPHA, WEIGHT = 7, 3, 16, 4, 0.5, 0.1
KEYS = ("center_distance", "center_ratio")
JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def stats(labels, features, centers):
    """Per sample: ||x_i - c_{y_i}||, and that over the mean distance between
    the centers of the batch's distinct classes (0 if they coincide)."""
    distance = np.array([np.linalg.norm(x - centers[y]) for y, x in zip(labels, features)])
    present = sorted(set(int(y) for y in labels))
    gaps = [np.linalg.norm(centers[a] - centers[b]) for a in present for b in present if a != b]
    between = np.mean(gaps) if gaps else 0.0
    return distance, (distance / between if between > 0 else np.zeros_like(distance))


def replay(x, y, epochs, centers=None, train=True):
    """Per epoch `(mean distance, mean ratio)` and the final centers."""
    centers = np.zeros((C, D)) if centers is None else centers.copy()
    means = []
    for _ in range(epochs):
        parts = []
        for step in range(len(x) // B):
            rows = slice(step * B, (step + 1) * B)
            parts.append(stats(y[rows], x[rows], centers))
            if train:
                centers = reference.update_centers(y[rows], x[rows], centers, ALPHA)
        means.append([np.mean(np.concatenate([p[k] for p in parts])) for k in (0, 1)])
    return np.array(means), centers


def data(rng, steps=STEPS, classes=5):
    x = (rng.normal(size=(steps * B, D)) + 3.0).astype("float32")
    y = rng.integers(0, classes, steps * B).astype("int32")
    return x, y


def functional(jit=False, center_metrics=True):
    skip_torch_compiled_layer(keras.backend.backend(), jit)
    x = keras.Input((D,), name="x")
    y = keras.Input((), dtype="int32", name="y")
    layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT, name="center",
                       center_metrics=center_metrics)
    logits = keras.layers.Dense(C, name="logits")(layer([x, y]))
    model = keras.Model([x, y], logits)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    return model, layer


def wrapped(jit=False, center_metrics=True):
    inputs = keras.Input((D,))
    backbone = keras.Model(inputs, [keras.layers.Dense(C)(inputs), inputs])
    model = CenterLossModel(backbone, C, alpha=ALPHA, weight=WEIGHT,
                            center_metrics=center_metrics)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    return model


def centers_of(layer):
    return keras.ops.convert_to_numpy(layer.centers.value).copy()


def history(h, prefix=""):
    return np.array([h.history[prefix + key] for key in KEYS]).T


@JIT
def test_layer_fit_and_evaluate_match_numpy(rng, jit):
    model, layer = functional(jit)
    x, y = data(rng)
    xv, yv = data(rng, steps=2)
    h = model.fit([x, y], y, batch_size=B, epochs=2, shuffle=False, verbose=0,
                  validation_data=([xv, yv], yv))
    expected, centers = replay(x, y, 2)
    np.testing.assert_allclose(history(h), expected, rtol=1e-4)
    np.testing.assert_allclose(centers_of(layer), centers, rtol=1e-5, atol=1e-6)
    trained = centers_of(layer)
    # validation after each epoch reads the centers of that epoch's end
    np.testing.assert_allclose(history(h, "val_")[-1], replay(xv, yv, 1, centers, False)[0][0],
                               rtol=1e-4)
    logs = model.evaluate([xv, yv], yv, batch_size=B, verbose=0, return_dict=True)
    np.testing.assert_allclose([logs[k] for k in KEYS], replay(xv, yv, 1, centers, False)[0][0],
                               rtol=1e-4)
    np.testing.assert_array_equal(centers_of(layer), trained)  # evaluate moved none
    assert expected[-1, 1] > 0  # the centers moved apart: a real ratio was compared


@JIT
def test_center_loss_model_fit_and_evaluate_match_numpy(rng, jit):
    model = wrapped(jit)
    x, y = data(rng)
    h = model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    expected, centers = replay(x, y, 2)
    np.testing.assert_allclose(history(h), expected, rtol=1e-4)
    logs = model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    np.testing.assert_allclose([logs[k] for k in KEYS], replay(x, y, 1, centers, False)[0][0],
                               rtol=1e-4)
    np.testing.assert_allclose(centers_of(model.center_loss), centers, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["layer", "model"])
def test_metrics_change_neither_centers_nor_losses(rng, kind):
    x, y = data(rng)
    runs = []
    for flag in (True, False):
        keras.utils.set_random_seed(7)
        if kind == "layer":
            model, layer = functional(center_metrics=flag)
            fit_x = [x, y]
        else:
            model = wrapped(center_metrics=flag)
            layer, fit_x = model.center_loss, x
        h = model.fit(fit_x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
        evaluated = model.evaluate(fit_x, y, batch_size=B, verbose=0, return_dict=True)
        runs.append((h.history, evaluated, centers_of(layer)))
    (on, on_eval, on_centers), (off, off_eval, off_centers) = runs
    assert all(k in on and k in on_eval for k in KEYS)
    assert not any(k in off or k in off_eval for k in KEYS)
    np.testing.assert_array_equal(on_centers, off_centers)
    np.testing.assert_allclose(on["loss"], off["loss"], rtol=1e-6)
    np.testing.assert_allclose(on_eval["loss"], off_eval["loss"], rtol=1e-6)


def test_one_class_batches_read_ratio_zero(rng):
    model, _ = functional()
    x, y = data(rng, classes=1)
    h = model.fit([x, y], y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    expected, _ = replay(x, y, 2)
    assert np.all(expected[:, 1] == 0) and np.all(expected[:, 0] > 0)
    np.testing.assert_allclose(history(h), expected, rtol=1e-5)


def test_sample_weights_weight_the_means(rng):
    model, _ = functional()
    x, y = data(rng, steps=1)
    w = rng.uniform(0.0, 2.0, B).astype("float32")
    w[:3] = 0.0
    model.fit([x, y], y, sample_weight=w, batch_size=B, verbose=0)  # moves the centers
    centers = reference.update_centers(y, x, np.zeros((C, D)), ALPHA, w)
    logs = model.evaluate([x, y], y, sample_weight=w, batch_size=B, verbose=0, return_dict=True)
    distance, ratio = stats(y, x, centers)
    np.testing.assert_allclose([logs[k] for k in KEYS],
                               [np.average(distance, weights=w), np.average(ratio, weights=w)],
                               rtol=1e-4)


def test_several_layers_prefix_their_names(rng):
    x_in = keras.Input((D,))
    y_in = keras.Input((), dtype="int32")
    first = CenterLoss(C, alpha=ALPHA, name="first", center_metrics=True)
    second = CenterLoss(C, alpha=ALPHA, name="second", center_metrics=True)
    doubled = keras.layers.Rescaling(2.0)(x_in)
    joined = keras.layers.Concatenate()([first([x_in, y_in]), second([doubled, y_in])])
    model = keras.Model([x_in, y_in], keras.layers.Dense(C)(joined))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(rng)
    h = model.fit([x, y], y, batch_size=B, shuffle=False, verbose=0)
    assert not any(k in h.history for k in KEYS)
    np.testing.assert_allclose(history(h, "first_"), replay(x, y, 1)[0], rtol=1e-4)
    np.testing.assert_allclose(history(h, "second_"), replay(2 * x, y, 1)[0], rtol=1e-4)


def test_inference_and_switched_off_show_no_metrics(rng):
    x, y = data(rng)
    inputs = keras.Input((D,))
    embedding = CenterLoss(C, center_metrics=True)(inputs)  # no labels: pass-through
    model = keras.Model(inputs, keras.layers.Dense(C)(embedding))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    h = model.fit(x, y, batch_size=B, verbose=0)
    logs = model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    assert set(h.history) == {"loss"} and set(logs) == {"loss"}
    model, _ = functional(center_metrics=False)
    h = model.fit([x, y], y, batch_size=B, verbose=0)
    assert set(h.history) == {"loss"}


@pytest.mark.parametrize("flag", [True, False])
def test_keras_file_keeps_the_flag(rng, tmp_path, flag):
    x, y = data(rng)
    model, _ = functional(center_metrics=flag)
    model.fit([x, y], y, batch_size=B, verbose=0)
    model.save(tmp_path / "layer.keras")
    loaded = keras.models.load_model(tmp_path / "layer.keras")
    assert loaded.get_layer("center").center_metrics is flag
    logs = loaded.evaluate([x, y], y, batch_size=B, verbose=0, return_dict=True)
    assert all((k in logs) is flag for k in KEYS)
    model = wrapped(center_metrics=flag)
    model.fit(x, y, batch_size=B, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.center_loss.center_metrics is flag
    logs = loaded.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    assert all((k in logs) is flag for k in KEYS)


def test_metrics_read_only_the_batch_rows(rng, monkeypatch):
    """Cost independent of C: the metrics see the B rows the step read for
    the loss, never the table (on TensorFlow: no op but the loss's gather and
    the update's scatter touches the table)."""
    from cl.keras3 import metrics
    classes = 100_000
    seen = []
    original = metrics.center_stats

    def spy(ids, ok, features, centers_batch):
        seen.append(tuple(centers_batch.shape))
        return original(ids, ok, features, centers_batch)

    monkeypatch.setattr(metrics, "center_stats", spy)
    x_in = keras.Input((D,))
    y_in = keras.Input((), dtype="int32")
    layer = CenterLoss(classes, alpha=ALPHA, center_metrics=True)
    model = keras.Model([x_in, y_in], keras.layers.Dense(4)(layer([x_in, y_in])))
    model.compile("sgd", "mse")
    x, y = data(rng, steps=1)
    h = model.fit([x, y], np.zeros((B, 4)), batch_size=B, verbose=0)
    assert "center_distance" in h.history
    assert seen and all(shape == (B, D) for shape in seen if None not in shape), seen
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        step = tf.function(lambda a, b, t: model.train_step(((a, b), t)))
        graph = step.get_concrete_function(
            tf.TensorSpec((B, D)), tf.TensorSpec((B,), tf.int32), tf.TensorSpec((B, 4))).graph
        handle = {internal.ref() for external, internal in graph.captures
                  if external is layer.centers.value.handle}
        touching = sorted(op.type for op in graph.get_operations()
                          if any(t.ref() in handle for t in op.inputs))
        assert touching == ["ResourceGather", "ResourceScatterSub"], touching
