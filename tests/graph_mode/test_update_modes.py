"""`update_on="gradient"`: runs that do not train leave the centers alone.

The default (`"loss"`, the blog's) updates whenever the loss or its gradient
runs. Harnesses that fetch the loss outside training (Estimator evaluate, a
NanTensorHook, a separate summary run) need the centers to move only with
the gradient. Also here: `cl.loss(training=...)`, Estimator and warm starts.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf

import cl

C, D_IN, D, B, ALPHA = 5, 4, 3, 8, 0.5


def build(rng, batch=B, **kwargs):
    images = tf.compat.v1.placeholder(tf.float32, [batch, D_IN], name="images")
    labels = tf.compat.v1.placeholder(tf.int64, [batch], name="labels")
    weights = tf.compat.v1.get_variable(
        "w", initializer=tf.compat.v1.constant_initializer(rng.normal(size=(D_IN, D))),
        shape=[D_IN, D])
    features = tf.matmul(images, weights)
    loss = tf.reduce_mean(cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, **kwargs))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)
    return images, labels, features, loss, train_op


def feed_of(images, labels, rng):
    y = rng.integers(0, C, B)
    return {images: (rng.normal(size=(B, D_IN)) + y[:, None]).astype(np.float32), labels: y}


def centers_value(session):
    return session.run(cl.get_centers())


@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
@pytest.mark.parametrize("setting", ["per_call", "package"])
def test_gradient_mode_updates_only_with_the_gradient(session, rng, monkeypatch, batch, setting):
    if setting == "package":
        monkeypatch.setattr(cl, "UPDATE_ON", "gradient")
        kwargs = {}
    else:
        kwargs = {"update_on": "gradient"}
    images, labels, features, loss, train_op = build(rng, batch, **kwargs)
    summary = tf.compat.v1.summary.scalar("center_loss", loss)
    session.run(tf.compat.v1.global_variables_initializer())
    feed = feed_of(images, labels, rng)
    x = session.run(features, feed)
    session.run(loss, feed)  # the loss alone: no update
    assert not centers_value(session).any()
    session.run([train_op, loss, summary], feed)  # a training run: one update
    expected = reference.update_centers(feed[labels], x, np.zeros((C, D)), ALPHA)
    np.testing.assert_allclose(centers_value(session), expected, rtol=1e-5, atol=1e-6)
    session.run(summary, feed)  # a separate summary run: nothing more
    session.run(loss, feed_of(images, labels, rng))  # a validation fetch: nothing
    np.testing.assert_allclose(centers_value(session), expected, rtol=1e-5, atol=1e-6)
    # The loss of a later run is read from the updated centers.
    np.testing.assert_allclose(
        session.run(loss, feed), reference.center_loss(feed[labels], x, expected).mean(),
        rtol=1e-5)


def test_update_on_is_checked(session):
    labels = tf.compat.v1.placeholder(tf.int64, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, D])
    with pytest.raises(ValueError, match=r"update_on must be 'loss'.*'gradient'.*received 'grad'"):
        cl.center_loss(labels, features, num_classes=C, update_on="grad")
    assert not tf.compat.v1.global_variables()  # refused before a table was made


@pytest.mark.parametrize("update_on, moves_on_validation", [("loss", True), ("gradient", False)])
def test_nan_tensor_hook_and_a_validation_fetch(rng, tmp_path, update_on, moves_on_validation):
    """NanTensorHook(loss) adds the loss to every run: in the blog's mode a
    fetch of validation accuracy moves the centers, in gradient mode not."""
    with tf.Graph().as_default():
        images, labels, features, loss, _ = build(rng, update_on=update_on)
        step = tf.compat.v1.train.get_or_create_global_step()
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(
            loss, global_step=step)
        accuracy = tf.reduce_mean(features)
        hooks = [tf.compat.v1.train.NanTensorHook(loss)]
        table = cl.get_centers()

        def centers_value(session):  # the raw session: no hook adds the loss
            return session.run_step_fn(lambda step_context: step_context.session.run(table))

        with tf.compat.v1.train.MonitoredTrainingSession(
                checkpoint_dir=str(tmp_path), hooks=hooks, save_summaries_steps=None,
                save_checkpoint_secs=None, log_step_count_steps=None) as session:
            feed = feed_of(images, labels, rng)
            x = session.run_step_fn(lambda step_context: step_context.session.run(features, feed))
            session.run(train_op, feed)
            expected = reference.update_centers(feed[labels], x, np.zeros((C, D)), ALPHA)
            np.testing.assert_allclose(centers_value(session), expected, rtol=1e-5, atol=1e-6)
            session.run(accuracy, feed_of(images, labels, rng))
            moved = not np.allclose(centers_value(session), expected, rtol=1e-5, atol=1e-6)
    assert moved == moves_on_validation


@pytest.mark.parametrize("training", [False, "tensor"])
def test_blog_loss_takes_training(session, rng, monkeypatch, training):
    monkeypatch.setattr(cl, "NUM_CLASSES", C)
    labels = tf.compat.v1.placeholder(tf.float32, [B, C])
    logits = tf.compat.v1.placeholder(tf.float32, [B, C])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    loss = cl.loss(labels, logits, training=is_training if training == "tensor" else training)
    session.run(tf.compat.v1.global_variables_initializer())
    y = rng.integers(0, C, B)
    x = rng.normal(size=(B, C)).astype(np.float32)
    feed = {labels: np.eye(C)[y], logits: x}
    session.run(loss, feed)
    table = cl.get_centers()
    assert not session.run(table).any()
    if training == "tensor":
        session.run(loss, {**feed, is_training: True})
        np.testing.assert_allclose(
            session.run(table), reference.update_centers(y, x, np.zeros((C, C)), cl.ALPHA),
            rtol=1e-5, atol=1e-6)


def test_gradient_mode_under_keras_fit_and_evaluate(rng, monkeypatch):
    """Package-wide gradient mode changes nothing under Keras 2: fit updates
    once per step by the rule, evaluate moves nothing."""
    from cl import compat
    keras = compat.keras_module()
    monkeypatch.setattr(cl, "UPDATE_ON", "gradient")
    monkeypatch.setattr(cl, "NUM_CLASSES", C)
    monkeypatch.setattr(cl, "ALPHA", ALPHA)
    inputs = keras.Input((D_IN,))
    model = keras.Model(inputs, keras.layers.Dense(C)(inputs))
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0))
    y = rng.integers(0, C, B)
    x = rng.normal(size=(B, D_IN)).astype(np.float32)
    logits = model.predict(x, batch_size=B)
    model.fit(x, np.eye(C)[y], batch_size=B, epochs=1, verbose=0)
    table = cl.centers_of(model)[0]
    session = compat.keras_backend(model).get_session()
    expected = reference.update_centers(y, logits, np.zeros((C, C)), ALPHA)
    np.testing.assert_allclose(session.run(table), expected, rtol=1e-5, atol=1e-6)
    model.evaluate(x, np.eye(C)[y], batch_size=B, verbose=0)
    np.testing.assert_allclose(session.run(table), expected, rtol=1e-5, atol=1e-6)
