"""The Estimator `model_fn` of docs/harnesses.md: train, evaluate, predict, warm starts.

`tf.estimator` exists up to TensorFlow 2.15; the file skips elsewhere.
"""

import inspect
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


def test_blog_mode_evaluate_reports_the_trained_centers_loss(trained, tmp_path):
    """Issue 21 item 4: the README's model_fn in the blog's mode (no
    update_on, no training=) used to report a loss from centers its eval
    batches moved (2.94520 vs 2.94204); cl now reads the Estimator's mode."""
    blog = estimator.Estimator(blog_mode_model_fn, model_dir=trained.model_dir, params=PARAMS)
    x, y = data(1, 3)
    embedding, logits = predicted(blog, x)
    centers = blog.get_variable_value(TABLE)
    from_trained = np.mean([
        softmax_loss(y[r], logits[r]).mean() + LAMBDA * reference.center_loss(
            y[r], embedding[r], centers).mean()
        for r in (slice(s, s + B) for s in range(0, len(y), B))])
    np.testing.assert_allclose(blog.evaluate(input_fn(x, y))["loss"], from_trained, rtol=1e-5)
    np.testing.assert_array_equal(blog.get_variable_value(TABLE), centers)


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


def serving_model_fn(update_on):
    """A model_fn written without `training=` (the blog's default mode, or
    another), whose PREDICT branch serves the distance to the class center,
    and whose train op follows the BatchNorm idiom (UPDATE_OPS)."""
    import cl

    def model_fn(features, labels, mode, params):
        embedding = tf.compat.v1.layers.dense(features["x"], D, name="embedding")
        logits = tf.compat.v1.layers.dense(embedding, C, name="logits")
        if mode == estimator.ModeKeys.PREDICT:
            guess = tf.argmax(logits, axis=-1)
            distance = cl.center_loss(guess, embedding, alpha=ALPHA, num_classes=C,
                                      update_on=update_on)
            return estimator.EstimatorSpec(mode, predictions={
                "distance": distance, "embedding": embedding, "guess": guess},
                                           export_outputs={"serving": estimator.export.PredictOutput(
                                               {"distance": distance})})
        center_term = cl.center_loss(labels, embedding, alpha=ALPHA, num_classes=C,
                                     update_on=update_on)
        softmax_term = cl.softmax_loss(tf.one_hot(labels, C), logits)
        loss = tf.reduce_mean(softmax_term) + LAMBDA * tf.reduce_mean(center_term)
        with tf.control_dependencies(tf.compat.v1.get_collection(
                tf.compat.v1.GraphKeys.UPDATE_OPS)):
            train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(
                loss, global_step=tf.compat.v1.train.get_global_step())
        return estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


@pytest.mark.parametrize("update_on", ["loss", "gradient", "update_ops"])
def test_evaluate_and_predict_never_move_the_centers(tmp_path, update_on):
    """Issue 21 item 4: Estimator tells model_fn the mode; cl reads it, so
    evaluate's loss comes from the trained centers and a PREDICT output of
    center_loss reads them, in every mode, with no `training=`."""
    x, y = data(0, 3)
    est = estimator.Estimator(serving_model_fn(update_on), model_dir=str(tmp_path))
    est.train(input_fn(x, y), steps=3)
    centers = est.get_variable_value(TABLE)
    assert np.abs(centers).max() > 0.1
    x_eval, y_eval = data(1, 3)
    # (Evaluate and predict restore the checkpoint, so a move shows only in
    # what they report from batches after the first.)
    predictions = list(est.predict(
        lambda: tf.data.Dataset.from_tensor_slices({"x": x_eval}).batch(B)))
    embedding = np.stack([p["embedding"] for p in predictions]).astype(np.float64)
    guess = np.array([p["guess"] for p in predictions])
    np.testing.assert_allclose([p["distance"] for p in predictions],
                               reference.center_loss(guess, embedding, centers), rtol=1e-5)
    logits = est.get_variable_value("logits/kernel")
    logits = embedding @ logits + est.get_variable_value("logits/bias")
    per_batch = [softmax_loss(y_eval[r], logits[r]).mean() + LAMBDA * reference.center_loss(
        y_eval[r], embedding[r], centers).mean()
        for r in (slice(s, s + B) for s in range(0, len(y_eval), B))]
    np.testing.assert_allclose(est.evaluate(input_fn(x_eval, y_eval))["loss"],
                               np.mean(per_batch), rtol=1e-5)
    np.testing.assert_array_equal(est.get_variable_value(TABLE), centers)


def test_exported_serving_output_never_moves_the_centers(tmp_path):
    """The exported PREDICT graph, called twice on the same input, gives the
    same distances (it moved the centers on every call before)."""
    x, y = data(0, 2)
    est = estimator.Estimator(serving_model_fn("loss"), model_dir=str(tmp_path / "model"))
    est.train(input_fn(x, y), steps=2)

    def serving_input():
        inputs = {"x": tf.compat.v1.placeholder(tf.float32, [None, D_IN])}
        return estimator.export.ServingInputReceiver(inputs, inputs)

    exported = est.export_saved_model(str(tmp_path / "export"), serving_input).decode()
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.load(session, ["serve"], exported)
        signature = meta.signature_def["serving"]
        fetch = signature.outputs["distance"].name
        feed = {signature.inputs["x"].name: x[:B]}
        np.testing.assert_array_equal(session.run(fetch, feed), session.run(fetch, feed))


def test_estimator_mode_canary():
    """The frame cl reads the mode from (`cl.compat.estimator_mode`)."""
    from cl import compat
    source = inspect.getsource(estimator.Estimator._call_model_fn)
    assert compat.ESTIMATOR_FRAME == "_call_model_fn" and "mode" in source
    seen = []

    def model_fn(features, labels, mode):
        seen.append((mode, compat.estimator_mode()))
        out = tf.compat.v1.layers.dense(features["x"], 1)
        step = tf.compat.v1.train.get_global_step()
        return estimator.EstimatorSpec(mode, loss=tf.reduce_mean(out), predictions=out,
                                       train_op=tf.compat.v1.assign_add(step, 1))

    x, y = data(0, 1)
    est = estimator.Estimator(model_fn)
    est.train(input_fn(x, y), steps=1)
    est.evaluate(input_fn(x, y))
    list(est.predict(lambda: tf.data.Dataset.from_tensor_slices({"x": x}).batch(B)))
    assert seen == [("train", "train"), ("eval", "eval"), ("infer", "infer")]
    assert compat.estimator_mode() is None
