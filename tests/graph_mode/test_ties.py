"""`cl.graph.ties`: what makes a session run apply the update, once.

Three modes (`update_on=`, or `cl.UPDATE_ON` package-wide): "loss" (the
blog's: running the loss or its gradient), "gradient" (only a run that
computes the loss's gradient), "update_ops" (TF1's BatchNormalization
idiom: the update joins `tf.compat.v1.GraphKeys.UPDATE_OPS` and nothing
else, so a train op built under `control_dependencies(UPDATE_OPS)` moves
the centers once per run whatever reaches the features).

Every test trains with learning rate 0 and compares the centers with the
numpy rule after each run. Issue 21 item 1 (frozen backbones) and item 2
(two updating calls of one table).
"""

import numpy as np
import pytest
import reference
import tensorflow as tf

import cl
from cl import compat

C, D_IN, D, B, ALPHA = 5, 4, 3, 8, 0.5
UPDATE_OPS = tf.compat.v1.GraphKeys.UPDATE_OPS


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
