"""The Estimator `model_fn` of docs/harnesses.md: train, evaluate, predict, warm starts.

`tf.estimator` exists up to TensorFlow 2.15; the file skips elsewhere.
"""

import pathlib
import re

import numpy as np
import pytest
import reference
import tensorflow as tf

try:
    estimator = tf.estimator
except AttributeError:
    pytest.skip(f"TensorFlow {tf.__version__} has no tf.estimator", allow_module_level=True)

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "harnesses.md"
C, D_IN, D, B, ALPHA, LAMBDA = 4, 5, 3, 8, 0.5, 0.1
TABLE = "center_loss/centers"


def readme_model_fn():
    (block,) = re.findall(r"```python estimator\n(.*?)```", PAGE.read_text(), re.S)
    scope = {}
    exec(block, scope)
    return scope["model_fn"]


MODEL_FN = readme_model_fn()
PARAMS = dict(dim=D, num_classes=C, learning_rate=0.0, **{"lambda": LAMBDA})


def blog_mode_model_fn(features, labels, mode, params):
    """The README's model_fn with the centers updated by the loss (the blog's
    mode): what update_on="gradient" avoids."""
    import cl
    original = cl.center_loss

    def loss_mode(*args, **kwargs):
        return original(*args, **{**kwargs, "update_on": "loss"})

    cl.center_loss = loss_mode
    try:
        return MODEL_FN(features, labels, mode, params)
    finally:
        cl.center_loss = original


def with_centers_from(checkpoint):
    def model_fn(features, labels, mode, params):
        spec = MODEL_FN(features, labels, mode, params)
        tf.compat.v1.train.init_from_checkpoint(checkpoint, {"center_loss/": "center_loss/"})
        return spec
    return model_fn


def data(seed, batches):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, B * batches)
    x = (rng.normal(size=(len(y), D_IN)) + y[:, None]).astype(np.float32)
    return x, y


def input_fn(x, y):
    return lambda: tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(B)


def predicted(est, x):
    out = list(est.predict(lambda: tf.data.Dataset.from_tensor_slices({"x": x}).batch(B)))
    return (np.stack([p["embedding"] for p in out]).astype(np.float64),
            np.stack([p["logits"] for p in out]).astype(np.float64))


def softmax_loss(y, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]


def rule_over_batches(y, embedding, centers):
    for start in range(0, len(y), B):
        rows = slice(start, start + B)
        centers = reference.update_centers(y[rows], embedding[rows], centers, ALPHA)
    return centers


@pytest.fixture
def trained(tmp_path):
    """An Estimator trained 3 steps with learning rate 0 (fixed embedding)."""
    x, y = data(0, 3)
    est = estimator.Estimator(MODEL_FN, model_dir=str(tmp_path / "a"), params=PARAMS)
    est.train(input_fn(x, y), steps=3)
    embedding, _ = predicted(est, x)
    expected = rule_over_batches(y, embedding, np.zeros((C, D)))
    np.testing.assert_allclose(est.get_variable_value(TABLE), expected, rtol=1e-5, atol=1e-6)
    assert est.get_variable_value("global_step") == 3
    return est


def test_train_evaluate_predict(trained):
    centers = trained.get_variable_value(TABLE)
    x, y = data(1, 3)
    metrics = trained.evaluate(input_fn(x, y))
    embedding, logits = predicted(trained, x)
    per_batch = [
        softmax_loss(y[rows], logits[rows]).mean()
        + LAMBDA * reference.center_loss(y[rows], embedding[rows], centers).mean()
        for rows in (slice(s, s + B) for s in range(0, len(y), B))]
    np.testing.assert_allclose(metrics["loss"], np.mean(per_batch), rtol=1e-5)
    np.testing.assert_array_equal(trained.get_variable_value(TABLE), centers)
    assert embedding.shape == (len(y), D) and logits.shape == (len(y), C)


def test_blog_mode_evaluate_reads_centers_moved_by_eval_batches(trained, tmp_path):
    """The trap the README's update_on="gradient" avoids, measured."""
    blog = estimator.Estimator(blog_mode_model_fn, model_dir=trained.model_dir, params=PARAMS)
    x, y = data(1, 3)
    embedding, logits = predicted(blog, x)
    centers = blog.get_variable_value(TABLE)
    from_trained = np.mean([
        softmax_loss(y[r], logits[r]).mean() + LAMBDA * reference.center_loss(
            y[r], embedding[r], centers).mean()
        for r in (slice(s, s + B) for s in range(0, len(y), B))])
    assert abs(blog.evaluate(input_fn(x, y))["loss"] - from_trained) > 1e-4


@pytest.mark.parametrize("route", ["default", "all_but_step", "init_from_checkpoint"])
def test_warm_start(trained, tmp_path, route):
    checkpoint = trained.model_dir
    model_fn, settings = MODEL_FN, estimator.WarmStartSettings(checkpoint)
    if route == "all_but_step":
        settings = estimator.WarmStartSettings(checkpoint, vars_to_warm_start=["^(?!global_step)"])
    elif route == "init_from_checkpoint":
        model_fn = with_centers_from(checkpoint)
    est = estimator.Estimator(model_fn, model_dir=str(tmp_path / route), params=PARAMS,
                              warm_start_from=settings)
    x, y = data(2, 1)
    est.train(input_fn(x, y), steps=1)
    embedding, _ = predicted(est, x)
    np.testing.assert_array_equal(est.get_variable_value("embedding/kernel"),
                                  trained.get_variable_value("embedding/kernel"))
    assert est.get_variable_value("global_step") == 1  # the step is not carried
    start = np.zeros((C, D)) if route == "default" else trained.get_variable_value(TABLE)
    np.testing.assert_allclose(est.get_variable_value(TABLE),
                               rule_over_batches(y, embedding, start), rtol=1e-5, atol=1e-6)
