"""`cl.graph.ties`: what makes a session run apply the update, once.

The plainest TF1 loop, `sess.run(train_op)` alone, moves the centers
exactly once per run, whatever the loss's form and however the train op is
built: with a static batch size the gradient of `reduce_mean(loss)` needs
only the loss's shape, so TensorFlow prunes the loss op, and an update that
hung only on the loss value would never run.

Three modes (`update_on=`, or `cl.UPDATE_ON` package-wide): "loss" (the
blog's: running the loss or its gradient), "gradient" (only a run that
computes the loss's gradient), "update_ops" (TF1's BatchNormalization
idiom: the update joins `tf.compat.v1.GraphKeys.UPDATE_OPS` and nothing
else, so a train op built under `control_dependencies(UPDATE_OPS)` moves
the centers once per run whatever reaches the features).

Every test trains with learning rate 0 and compares the centers with the
numpy rule after each run. Issue 21 item 1 (frozen backbones) and item 2
(two updating calls of one table). Harnesses that fetch the loss outside
training (Estimator evaluate, a NanTensorHook, a separate summary run) use
"gradient"; `cl.loss(training=...)` switches the update off per call.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from helpers import SUPPORT, result_of, run_python, script

import cl
from cl import compat

C, D_IN, D, B, ALPHA = 5, 4, 3, 8, 0.5
UPDATE_OPS = tf.compat.v1.GraphKeys.UPDATE_OPS
# The loss forms and train-op routes of the `sess.run(train_op)` tests: a
# table of 6 classes on 5 inputs, and the blog's lambda for its loss.
FORM_C, FORM_D_IN, LAMBDA = 6, 5, 0.1


class Net:
    """images -> backbone -> features [B, D] -> head -> logits [B, C]."""

    def __init__(self, rng, batch=B, frozen="var_list", **center_kwargs):
        self.images = tf.compat.v1.placeholder(tf.float32, [batch, D_IN], name="images")
        self.labels = tf.compat.v1.placeholder(tf.int64, [batch], name="labels")
        init = tf.compat.v1.constant_initializer
        self.backbone = tf.compat.v1.get_variable(
            "backbone", initializer=init(rng.normal(size=(D_IN, D))), shape=[D_IN, D])
        self.head = tf.compat.v1.get_variable(
            "head", initializer=init(rng.normal(size=(D, C))), shape=[D, C])
        self.features = tf.matmul(self.images, self.backbone)
        center_input = tf.stop_gradient(self.features) if frozen == "stop_gradient" else \
            self.features
        logits = tf.matmul(self.features, self.head)
        softmax = tf.reduce_mean(cl.softmax_loss(tf.one_hot(self.labels, C), logits))
        self.loss = softmax + 0.1 * tf.reduce_mean(cl.center_loss(
            self.labels, center_input, alpha=ALPHA, num_classes=C, **center_kwargs))
        self.var_list = [self.head] if frozen == "var_list" else None

    def train_op(self, with_update_ops):
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.0)
        if not with_update_ops:
            return optimizer.minimize(self.loss, var_list=self.var_list)
        with tf.control_dependencies(tf.compat.v1.get_collection(UPDATE_OPS)):
            return optimizer.minimize(self.loss, var_list=self.var_list)

    def feed(self, rng):
        labels = rng.integers(0, C - 1, B)
        return {self.images: (rng.normal(size=(B, D_IN)) + labels[:, None]).astype(np.float32),
                self.labels: labels}


def centers(session):
    return session.run(cl.get_centers())


def expected_after(session, net, feed, before):
    """The rule applied once to `feed`'s features (read without the loss)."""
    return reference.update_centers(feed[net.labels], session.run(net.features, feed),
                                    before, ALPHA)


@pytest.mark.parametrize("frozen", ["var_list", "stop_gradient"])
@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
@pytest.mark.parametrize("setting", ["per_call", "package"])
def test_update_ops_mode_moves_a_frozen_backbone_once_per_train_run(
        session, rng, monkeypatch, frozen, batch, setting):
    """Issue 21 item 1: no gradient reaches the features (a frozen backbone),
    yet the BatchNorm idiom's train op moves the centers once per run; the
    loss alone, a summary and a validation fetch move nothing."""
    if setting == "package":
        monkeypatch.setattr(cl, "UPDATE_ON", "update_ops")
        net = Net(rng, batch, frozen)
    else:
        net = Net(rng, batch, frozen, update_on="update_ops")
    train_op = net.train_op(with_update_ops=True)
    assert len(tf.compat.v1.get_collection(UPDATE_OPS)) == 1
    session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((C, D))
    for _ in range(3):
        feed = net.feed(rng)
        session.run(net.loss, feed)  # logging the loss alone: nothing
        np.testing.assert_allclose(centers(session), expected, rtol=1e-5, atol=1e-6)
        expected = expected_after(session, net, feed, expected)
        session.run(train_op, feed)
        np.testing.assert_allclose(centers(session), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0.1


def test_update_ops_mode_with_loss_fetched_still_updates_once(session, rng):
    net = Net(rng, B, "var_list", update_on="update_ops")
    train_op = net.train_op(with_update_ops=True)
    session.run(tf.compat.v1.global_variables_initializer())
    feed = net.feed(rng)
    expected = expected_after(session, net, feed, np.zeros((C, D)))
    session.run([train_op, net.loss, net.loss], feed)
    np.testing.assert_allclose(centers(session), expected, rtol=1e-5, atol=1e-6)


def test_update_ops_mode_training_false_adds_nothing(session, rng):
    """An evaluation tower (training=False) never joins UPDATE_OPS: it would
    otherwise train on evaluation data in every train run."""
    labels = tf.compat.v1.placeholder(tf.int64, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, D])
    cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, update_on="update_ops",
                   training=False)
    assert tf.compat.v1.get_collection(UPDATE_OPS) == []


@pytest.mark.parametrize("update_on", ["loss", "gradient"])
def test_frozen_backbone_in_the_other_modes_applies_no_update(session, rng, update_on):
    """What the README warns about: with a frozen backbone and a static batch,
    `sess.run(train_op)` alone computes neither the center term's value nor
    its gradient, so "loss" and "gradient" modes apply no update."""
    net = Net(rng, B, "var_list", update_on=update_on)
    train_op = net.train_op(with_update_ops=False)
    session.run(tf.compat.v1.global_variables_initializer())
    session.run(train_op, net.feed(rng))
    assert not centers(session).any()


def test_update_on_names_every_mode(session):
    labels = tf.compat.v1.placeholder(tf.int64, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, D])
    with pytest.raises(ValueError, match=r"'loss'.*'gradient'.*'update_ops'.*received 'ops'"):
        cl.center_loss(labels, features, num_classes=C, update_on="ops")
    assert not tf.compat.v1.global_variables()  # refused before a table was made


@pytest.mark.parametrize("update_on", ["loss", "gradient", "update_ops"])
def test_keras2_fit_with_a_frozen_embedding_moves_once_per_step(rng, monkeypatch, update_on):
    """Issue 21 item 1, Keras 2: the learning phase gates the update, so a
    fit step moves the centers once in every mode, a frozen embedding layer
    included; evaluate moves nothing."""
    keras = compat.keras_module()
    monkeypatch.setattr(cl, "UPDATE_ON", update_on)
    inputs = keras.Input((D_IN,))
    embedding_layer = keras.layers.Dense(D, name="embedding", trainable=False)
    embedding = embedding_layer(inputs)
    logits = keras.layers.Dense(C, name="logits")(embedding)
    model = keras.Model(inputs, [logits, embedding])
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0),
                     loss={"logits": cl.SparseSoftmaxLoss(), "embedding": cl.CenterLoss(C, ALPHA)},
                     loss_weights={"logits": 1.0, "embedding": 0.1})
    session = compat.keras_backend(model).get_session()
    table = cl.centers_of(model)[0]
    expected = np.zeros((C, D))
    for _ in range(2):
        y = rng.integers(0, C, B)
        x = rng.normal(size=(B, D_IN)).astype(np.float32) + y[:, None]
        features = model.predict(x, batch_size=B, verbose=0)[1]
        model.fit(x, {"logits": y, "embedding": y}, batch_size=B, epochs=1, verbose=0)
        expected = reference.update_centers(y, features, expected, ALPHA)
        np.testing.assert_allclose(session.run(table), expected, rtol=1e-5, atol=1e-6)
    model.evaluate(x, {"logits": y, "embedding": y}, batch_size=B, verbose=0)
    np.testing.assert_allclose(session.run(table), expected, rtol=1e-5, atol=1e-6)


class TestOneUpdatingCallPerTable:
    """Issue 21 item 2: two calls that update one table would apply two
    updates in one run, in an order TensorFlow picks, sometimes both from
    the same read. Refused when the graph is built, with the fixes."""

    def placeholders(self):
        return (tf.compat.v1.placeholder(tf.int64, [None], name="labels"),
                tf.compat.v1.placeholder(tf.float32, [None, D], name="features"))

    @pytest.mark.parametrize("update_on", ["loss", "gradient", "update_ops"])
    def test_second_updating_call_refused(self, session, update_on):
        labels, features = self.placeholders()
        cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, update_on=update_on)
        with pytest.raises(ValueError) as error:
            cl.center_loss(labels, 2.0 * features, alpha=ALPHA, num_classes=C,
                           update_on=update_on)
        message = str(error.value)
        for fix in ("center_loss/centers", "concatenat", "TowerCenterLoss", "training=False",
                    "recompute_grad"):
            assert fix in message, (fix, message)
        assert len(tf.compat.v1.get_collection(UPDATE_OPS)) == (update_on == "update_ops")
        assert [v.name for v in tf.compat.v1.global_variables()] == ["center_loss/centers:0"]

    def test_siamese_branches_concatenated_are_one_exact_update(self, session, rng):
        """The fix the message gives: one call on both branches' batch."""
        labels_a, features_a = self.placeholders()
        labels_b, features_b = (tf.compat.v1.placeholder(tf.int64, [None]),
                                tf.compat.v1.placeholder(tf.float32, [None, D]))
        loss = cl.center_loss(tf.concat([labels_a, labels_b], 0),
                              tf.concat([features_a, features_b], 0),
                              alpha=ALPHA, num_classes=C)
        session.run(tf.compat.v1.global_variables_initializer())
        y = rng.integers(0, C, 2 * B)
        x = rng.normal(size=(2 * B, D)).astype(np.float32)
        session.run(loss, {labels_a: y[:B], features_a: x[:B], labels_b: y[B:], features_b: x[B:]})
        np.testing.assert_allclose(centers(session),
                                   reference.update_centers(y, x, np.zeros((C, D)), ALPHA),
                                   rtol=1e-5, atol=1e-6)

    def test_reading_calls_share_the_table(self, session, rng):
        """An evaluation tower with training=False reads the same table."""
        labels, features = self.placeholders()
        train = cl.center_loss(labels, features, alpha=ALPHA, num_classes=C)
        evaluate = cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, training=False)
        session.run(tf.compat.v1.global_variables_initializer())
        y, x = rng.integers(0, C, B), rng.normal(size=(B, D)).astype(np.float32)
        session.run(train, {labels: y, features: x})
        expected = reference.update_centers(y, x, np.zeros((C, D)), ALPHA)
        np.testing.assert_allclose(session.run(evaluate, {labels: y, features: x}),
                                   reference.center_loss(y, x, expected), rtol=1e-5)
        np.testing.assert_allclose(centers(session), expected, rtol=1e-5, atol=1e-6)

    def test_other_tables_and_other_graphs_are_free(self, session):
        labels, features = self.placeholders()
        cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, name="faces")
        cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, name="voices")
        with tf.Graph().as_default():  # e.g. a k-fold loop with a graph per fold
            labels, features = self.placeholders()
            cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, name="faces")

    def test_blog_loss_twice_in_one_graph(self, session, monkeypatch):
        """The blog's `cl.loss` raised "Variable centers already exists" on a
        second call; a second reading call now shares the table, a second
        updating call says why it is refused."""
        monkeypatch.setattr(cl, "NUM_CLASSES", C)
        logits = tf.compat.v1.placeholder(tf.float32, [None, C])
        onehot = tf.compat.v1.placeholder(tf.float32, [None, C])
        cl.loss(onehot, logits)
        cl.loss(onehot, logits, training=False)
        with pytest.raises(ValueError, match="training=False"):
            cl.loss(onehot, logits)
        assert [v.name for v in tf.compat.v1.global_variables()] == ["center_loss/centers:0"]

    @pytest.mark.parametrize("update_on", ["loss", "gradient"])
    def test_recompute_grad_refused(self, session, rng, update_on):
        """tf.recompute_grad runs the function again for the gradient: a
        second update of the table."""
        labels, _ = self.placeholders()
        images = tf.compat.v1.placeholder(tf.float32, [B, D_IN])
        weights = tf.compat.v1.get_variable("w", [D_IN, D])

        @tf.recompute_grad
        def block(x):
            return tf.reduce_mean(cl.center_loss(labels, tf.matmul(x, weights), alpha=ALPHA,
                                                 num_classes=C, update_on=update_on))

        loss = block(images)
        with pytest.raises(ValueError, match="recompute_grad"):
            tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)

    def test_towers_claim_their_table(self, session):
        labels, features = self.placeholders()
        towers = cl.TowerCenterLoss(C, ALPHA)
        towers(labels, features)
        towers(labels, features)
        towers.update_op()
        with pytest.raises(ValueError, match="TowerCenterLoss"):
            cl.center_loss(labels, features, alpha=ALPHA, num_classes=C, centers=towers.centers)


# update_on="gradient": runs that do not train leave the centers alone.


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


# sess.run(train_op) alone, for every form of the loss and every way of
# building the train op (learning rate 0: the features stay fixed).


def center_loss(labels, features, **kwargs):
    return cl.center_loss(labels, features, alpha=ALPHA, num_classes=FORM_C, **kwargs)


def scalar_mean(labels, features, logits, **kwargs):
    return tf.reduce_mean(center_loss(labels, features, **kwargs))


def softmax_plus_center(labels, features, logits, **kwargs):
    return (tf.reduce_mean(cl.softmax_loss(tf.one_hot(labels, FORM_C), logits))
            + tf.reduce_mean(center_loss(labels, features, **kwargs)))


def scalar_sum(labels, features, logits, **kwargs):
    return tf.reduce_sum(center_loss(labels, features, **kwargs))


def collection_total(labels, features, logits, **kwargs):
    tf.compat.v1.losses.add_loss(tf.reduce_mean(center_loss(labels, features, **kwargs)))
    return tf.compat.v1.losses.get_total_loss()


def scaled_mean(labels, features, logits, **kwargs):
    return 0.1 * tf.reduce_mean(center_loss(labels, features, **kwargs))


def mean_of_sum(labels, features, logits, **kwargs):
    return tf.reduce_mean(cl.softmax_loss(tf.one_hot(labels, FORM_C), logits)
                          + LAMBDA * center_loss(labels, features, **kwargs))


def weighted_reduction(reduction):
    def form(labels, features, logits, **kwargs):
        return tf.compat.v1.losses.compute_weighted_loss(
            center_loss(labels, features, **kwargs), reduction=reduction)
    form.__name__ = f"compute_weighted_loss_{reduction}"
    return form


def blog_loss(labels, features, logits, **kwargs):
    # The blog's combined loss on the logits (its centers are [C, C]).
    return tf.reduce_mean(cl.loss(tf.one_hot(labels, FORM_C), logits, **kwargs))


def softmax_center(labels, features, logits, **kwargs):
    return tf.reduce_mean(cl.softmax_center_loss(
        labels, logits, num_classes=FORM_C, alpha=ALPHA, lambda_=LAMBDA, **kwargs))


def keras_center_loss(labels, features, logits, **kwargs):
    assert not kwargs
    return cl.CenterLoss(FORM_C, alpha=ALPHA)(labels, features)


def keras_softmax_center_loss(labels, features, logits, **kwargs):
    assert not kwargs
    return cl.SoftmaxCenterLoss(FORM_C, alpha=ALPHA, lambda_=LAMBDA)(tf.one_hot(labels, FORM_C), logits)


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


@pytest.fixture
def blog_settings(monkeypatch):
    """The blog's package constants, for `cl.loss`."""
    for name, value in dict(NUM_CLASSES=FORM_C, ALPHA=ALPHA, LAMBDA=LAMBDA).items():
        monkeypatch.setattr(cl, name, value)


def the_table():
    """The one centers table of the default graph, whatever its scope."""
    (table,) = [v for v in tf.compat.v1.global_variables() if v.name.endswith("centers:0")]
    return table


class Model:
    """images -> features [B, D] -> logits [B, FORM_C], trainable TF1 variables."""

    def __init__(self, batch, rng):
        self.images = tf.compat.v1.placeholder(tf.float32, [batch, FORM_D_IN], name="images")
        self.labels = tf.compat.v1.placeholder(tf.int64, [batch], name="labels")
        init = tf.compat.v1.constant_initializer
        hidden = tf.compat.v1.get_variable(
            "hidden", initializer=init(rng.normal(size=(FORM_D_IN, D))), shape=[FORM_D_IN, D])
        out = tf.compat.v1.get_variable(
            "out", initializer=init(rng.normal(size=(D, FORM_C))), shape=[D, FORM_C])
        self.features = tf.matmul(self.images, hidden)
        self.logits = tf.matmul(self.features, out)

    def feed(self, rng):
        labels = rng.integers(0, FORM_C - 1, B)  # duplicates; the last class absent
        images = (rng.normal(size=(B, FORM_D_IN)) + labels[:, None]).astype(np.float32)
        return {self.images: images, self.labels: labels}


def build_form(form, batch, rng, **kwargs):
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


@pytest.mark.usefixtures("blog_settings")
@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_train_op_alone_updates_once_per_run(session, rng, form, route, batch):
    model, loss = build_form(form, batch, rng)
    train_op = route(loss)
    session.run(tf.compat.v1.global_variables_initializer())
    feeds = [model.feed(rng) for _ in range(3)]
    plan = expect_updates(session, model, form, feeds, [1, 1, 1])
    for feed, expected in zip(feeds, plan):
        session.run(train_op, feed)
        np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(plan[-1]).max() > 0.1  # the rule moved them by a visible amount


@pytest.mark.usefixtures("blog_settings")
@pytest.mark.parametrize("batch", [B, None], ids=["static_batch", "dynamic_batch"])
def test_train_op_with_loss_and_a_second_gradient_updates_once(session, rng, batch):
    """A gradient-norm summary beside minimize computes a second gradient of
    the same loss; the loss is fetched too: still one update per run."""
    model, loss = build_form(softmax_plus_center, batch, rng)
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


@pytest.mark.usefixtures("blog_settings")
def test_fetching_the_loss_alone_applies_the_update(session, rng):
    """The blog's behaviour, kept by default: running the loss runs the update."""
    model, loss = build_form(scalar_mean, B, rng)
    session.run(tf.compat.v1.global_variables_initializer())
    feed = model.feed(rng)
    (expected,) = expect_updates(session, model, scalar_mean, [feed], [1])
    session.run(loss, feed)
    np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("blog_settings")
def test_tf_data_with_drop_remainder(session, rng):
    """A fixed batch from tf.data (drop_remainder=True) and train_op alone."""
    images = rng.normal(size=(4 * B + 3, FORM_D_IN)).astype(np.float32)
    labels = rng.integers(0, FORM_C, len(images))
    data = tf.compat.v1.data.make_one_shot_iterator(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(B, drop_remainder=True))
    image_batch, label_batch = data.get_next()
    assert image_batch.shape.as_list() == [B, FORM_D_IN]
    weights = tf.compat.v1.get_variable(
        "w", initializer=tf.compat.v1.constant_initializer(rng.normal(size=(FORM_D_IN, D))),
        shape=[FORM_D_IN, D])
    features = tf.matmul(image_batch, weights)
    train_op = minimize(tf.reduce_mean(center_loss(label_batch, features)))
    session.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros((FORM_C, D))
    w = session.run(weights)
    for step in range(4):
        session.run(train_op)
        rows = slice(step * B, (step + 1) * B)
        expected = reference.update_centers(labels[rows], images[rows] @ w, expected, ALPHA)
        np.testing.assert_allclose(session.run(the_table()), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("blog_settings")
@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_mirrored_strategy_train_op_alone(kind):
    """Raw strategy.run code, static batch: every copy follows the rule on
    the global batch, once per run."""
    done = run_python(script("mirrored_train_op_alone"), SUPPORT, kind, timeout=300)
    report = result_of(done.stdout, done.stderr)
    assert report["copies_equal"] and report["moved"] > 0.1
    assert report["deviation"] < 1e-5
