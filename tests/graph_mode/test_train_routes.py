"""The plainest TF1 loop: `sess.run(train_op)` moves the centers exactly once.

With a static batch size the gradient of `reduce_mean(loss)` needs only the
loss's shape, so TensorFlow prunes the loss op from `sess.run(train_op)`: an
update that hangs only on the loss value would never run. Every test here
trains with learning rate 0 (the features stay fixed), runs a given set of
fetches, and compares the centers with the numpy rule applied once per run.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from helpers import SUPPORT, result_of, run_python, script

import cl

C, D_IN, D, B, ALPHA, LAMBDA = 6, 5, 3, 8, 0.5, 0.1


def center_loss(labels, features, **kwargs):
    return cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, **kwargs)


def scalar_mean(labels, features, logits, **kwargs):
    return tf.reduce_mean(center_loss(labels, features, **kwargs))


def softmax_plus_center(labels, features, logits, **kwargs):
    return (tf.reduce_mean(cl.softmax_loss(tf.one_hot(labels, C), logits))
            + tf.reduce_mean(center_loss(labels, features, **kwargs)))


def scalar_sum(labels, features, logits, **kwargs):
    return tf.reduce_sum(center_loss(labels, features, **kwargs))


def collection_total(labels, features, logits, **kwargs):
    tf.compat.v1.losses.add_loss(tf.reduce_mean(center_loss(labels, features, **kwargs)))
    return tf.compat.v1.losses.get_total_loss()


def scaled_mean(labels, features, logits, **kwargs):
    return 0.1 * tf.reduce_mean(center_loss(labels, features, **kwargs))


def mean_of_sum(labels, features, logits, **kwargs):
    return tf.reduce_mean(cl.softmax_loss(tf.one_hot(labels, C), logits)
                          + LAMBDA * center_loss(labels, features, **kwargs))


def weighted_reduction(reduction):
    def form(labels, features, logits, **kwargs):
        return tf.compat.v1.losses.compute_weighted_loss(
            center_loss(labels, features, **kwargs), reduction=reduction)
    form.__name__ = f"compute_weighted_loss_{reduction}"
    return form


def blog_loss(labels, features, logits, **kwargs):
    # The blog's combined loss on the logits (its centers are [C, C]).
    return tf.reduce_mean(cl.loss(tf.one_hot(labels, C), logits, **kwargs))


def softmax_center(labels, features, logits, **kwargs):
    return tf.reduce_mean(cl.softmax_center_loss(
        labels, logits, num_classes=C, alpha=ALPHA, lambda_=LAMBDA, **kwargs))


def keras_center_loss(labels, features, logits, **kwargs):
    assert not kwargs
    return cl.CenterLoss(C, alpha=ALPHA)(labels, features)


def keras_softmax_center_loss(labels, features, logits, **kwargs):
    assert not kwargs
    return cl.SoftmaxCenterLoss(C, alpha=ALPHA, lambda_=LAMBDA)(tf.one_hot(labels, C), logits)


Reduction = tf.compat.v1.losses.Reduction
FORMS = [scalar_mean, softmax_plus_center, scalar_sum, collection_total, scaled_mean,
         mean_of_sum, *[weighted_reduction(r) for r in Reduction.all() if r != Reduction.NONE],
         blog_loss, softmax_center, keras_center_loss, keras_softmax_center_loss]
# The forms whose table holds the logits' rows rather than the embedding's.
ON_LOGITS = (blog_loss, softmax_center, keras_softmax_center_loss)


def minimize(loss):
    return tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)


def compute_then_apply(loss):
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.0)
    return optimizer.apply_gradients(optimizer.compute_gradients(loss))


def plain_gradients(loss):
    variables = tf.compat.v1.trainable_variables()
    return tf.group(*[v.assign_sub(0.0 * g)
                      for v, g in zip(variables, tf.gradients(loss, variables)) if g is not None])


ROUTES = [minimize, compute_then_apply, plain_gradients]


@pytest.fixture(autouse=True)
def blog_settings(monkeypatch):
    """The blog's package constants, for `cl.loss`."""
    for name, value in dict(NUM_CLASSES=C, ALPHA=ALPHA, LAMBDA=LAMBDA).items():
        monkeypatch.setattr(cl, name, value)


def the_table():
    """The one centers table of the default graph, whatever its scope."""
    (table,) = [v for v in tf.compat.v1.global_variables() if v.name.endswith("centers:0")]
    return table


class Model:
    """images -> features [B, D] -> logits [B, C], trainable TF1 variables."""

    def __init__(self, batch, rng):
        self.images = tf.compat.v1.placeholder(tf.float32, [batch, D_IN], name="images")
        self.labels = tf.compat.v1.placeholder(tf.int64, [batch], name="labels")
        init = tf.compat.v1.constant_initializer
        hidden = tf.compat.v1.get_variable(
            "hidden", initializer=init(rng.normal(size=(D_IN, D))), shape=[D_IN, D])
        out = tf.compat.v1.get_variable(
            "out", initializer=init(rng.normal(size=(D, C))), shape=[D, C])
        self.features = tf.matmul(self.images, hidden)
        self.logits = tf.matmul(self.features, out)

    def feed(self, rng):
        labels = rng.integers(0, C - 1, B)  # duplicates; the last class absent
        images = (rng.normal(size=(B, D_IN)) + labels[:, None]).astype(np.float32)
        return {self.images: images, self.labels: labels}


def build(form, batch, rng, **kwargs):
    model = Model(batch, rng)
    loss = form(model.labels, model.features, model.logits, **kwargs)
    return model, loss


def expect_updates(session, model, form, feeds, runs_per_feed):
    """Reference centers after `runs_per_feed[k]` updates on feed k."""
    rows = model.logits if form in ON_LOGITS else model.features
    expected = session.run(the_table()).astype(np.float64)
    plan = []
    for feed, runs in zip(feeds, runs_per_feed):
        x = session.run(rows, feed)  # moves nothing: no loss in this fetch
        for _ in range(runs):
            expected = reference.update_centers(feed[model.labels], x, expected, ALPHA)
        plan.append(expected)
    return plan


@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_train_op_alone_updates_once_per_run(session, rng, form, route, batch):
    model, loss = build(form, batch, rng)
    train_op = route(loss)
    session.run(tf.compat.v1.global_variables_initializer())
    feeds = [model.feed(rng) for _ in range(3)]
    plan = expect_updates(session, model, form, feeds, [1, 1, 1])
    for feed, expected in zip(feeds, plan):
        session.run(train_op, feed)
        np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(plan[-1]).max() > 0.1  # the rule moved them by a visible amount


@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
def test_train_op_with_loss_and_a_second_gradient_updates_once(session, rng, batch):
    """A gradient-norm summary beside minimize computes a second gradient of
    the same loss; the loss is fetched too: still one update per run."""
    model, loss = build(softmax_plus_center, batch, rng)
    train_op = minimize(loss)
    norm = tf.linalg.global_norm(tf.gradients(loss, tf.compat.v1.trainable_variables()))
    summary = tf.compat.v1.summary.scalar("loss", loss)
    session.run(tf.compat.v1.global_variables_initializer())
    feeds = [model.feed(rng) for _ in range(2)]
    plan = expect_updates(session, model, softmax_plus_center, feeds, [1, 1])
    session.run([train_op, loss, norm, summary], feeds[0])
    np.testing.assert_allclose(session.run(the_table()), plan[0], rtol=1e-5, atol=1e-6)
    session.run([train_op, norm], feeds[1])
    np.testing.assert_allclose(session.run(the_table()), plan[1], rtol=1e-5, atol=1e-6)


def test_fetching_the_loss_alone_applies_the_update(session, rng):
    """The blog's behaviour, kept by default: running the loss runs the update."""
    model, loss = build(scalar_mean, B, rng)
    session.run(tf.compat.v1.global_variables_initializer())
    feed = model.feed(rng)
    (expected,) = expect_updates(session, model, scalar_mean, [feed], [1])
    session.run(loss, feed)
    np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-6)


def test_tf_data_with_drop_remainder(session, rng):
    """A fixed batch from tf.data (drop_remainder=True) and train_op alone."""
    images = rng.normal(size=(4 * B + 3, D_IN)).astype(np.float32)
    labels = rng.integers(0, C, len(images))
    data = tf.compat.v1.data.make_one_shot_iterator(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(B, drop_remainder=True))
    image_batch, label_batch = data.get_next()
    assert image_batch.shape.as_list() == [B, D_IN]
    weights = tf.compat.v1.get_variable(
        "w", initializer=tf.compat.v1.constant_initializer(rng.normal(size=(D_IN, D))),
        shape=[D_IN, D])
    features = tf.matmul(image_batch, weights)
    train_op = minimize(tf.reduce_mean(center_loss(label_batch, features)))
    session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((C, D))
    w = session.run(weights)
    for step in range(4):
        session.run(train_op)
        rows = slice(step * B, (step + 1) * B)
        expected = reference.update_centers(labels[rows], images[rows] @ w, expected, ALPHA)
        np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_mirrored_strategy_train_op_alone(kind):
    """Raw strategy.run code, static batch: every copy follows the rule on
    the global batch, once per run."""
    done = run_python(script("mirrored_train_op_alone"), SUPPORT, kind, timeout=300)
    report = result_of(done.stdout, done.stderr)
    assert report["copies_equal"] and report["moved"] > 0.1
    assert report["deviation"] < 1e-5
