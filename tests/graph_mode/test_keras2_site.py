"""`cl.keras2.site`: the Keras 2 compile building a cl loss: the model's own
table, Keras's sample weights, one update per step gated on the learning
phase (training only, never evaluate, predict or validation), subclassed
models, one loss on two outputs. Against the numpy reference.
"""

import warnings

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import backend, keras
from keras2_models import (
    D_IN,
    C,
    compile_two_outputs,
    data,
    embedding_model,
    frozen_embedding_fit,
    logits_model,
    onehot,
    session,
)

import cl

pytestmark = pytest.mark.usefixtures("blog_classes")  # cl.NUM_CLASSES = C


def replay_fit(features, y, batch_size, epochs, alpha):
    """The centers Keras fit should produce, by the paper's rule in numpy."""
    centers = np.zeros((C, features.shape[1]))
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            part = slice(start, start + batch_size)
            centers = reference.update_centers(y[part], features[part], centers, alpha)
    return centers


class TestBlogUsage:
    """The blog's client code, and fit's updates as the paper's rule."""

    def test_blog_client_code(self, rng):
        """compile with cl.loss, the blog's initializer, fit with validation, evaluate."""
        model = logits_model()
        model.compile(optimizer=keras.optimizers.legacy.Adam(learning_rate=1e-3, decay=1e-5)
                      if hasattr(keras.optimizers, "legacy") else "adam",
                      loss=cl.loss, metrics=[cl.categorical_accuracy])
        sess = backend.get_session()
        sess.run(tf.compat.v1.global_variables_initializer())
        x, y = data(rng)
        history = model.fit(x, onehot(y), epochs=2, batch_size=16, verbose=0,
                            validation_data=(x[:16], onehot(y[:16])))
        assert set(history.history) >= {"loss", "categorical_accuracy", "val_loss"}
        loss, accuracy = model.evaluate(x, onehot(y), verbose=0)
        assert np.isfinite(loss) and 0 <= accuracy <= 1
        centers = sess.run(cl.get_centers())
        assert centers.shape == (C, C) and np.any(centers)

    def test_fit_updates_exactly_as_the_paper(self, rng):
        """Frozen model: fit's updates equal the numpy rule batch by batch."""
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=48)
        model.fit(x, onehot(y), epochs=3, batch_size=16, shuffle=False, verbose=0)
        expected = replay_fit(model.predict(x), y, 16, 3, cl.ALPHA)
        np.testing.assert_allclose(session().run(cl.get_centers()), expected, rtol=1e-5, atol=1e-6)

    def test_raw_tf1_loop_with_keras_layers_updates(self, rng):
        """No feeds but the data: the update runs (not gated on learning phase)."""
        features = keras.layers.Dense(C)(keras.Input((D_IN,)))
        labels = tf.compat.v1.placeholder(tf.float32, [None, C])
        total = tf.reduce_mean(cl.loss(labels, features))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(total)
        inputs = features.op.inputs[0].op.inputs[0]
        sess = backend.get_session()
        sess.run(tf.compat.v1.global_variables_initializer())
        x, y = data(rng)
        sess.run(train_op, {inputs: x, labels: onehot(y)})
        assert np.any(sess.run(cl.get_centers()))


class TestTrainingOnlyUpdates:
    """Only training steps move the centers."""

    def test_evaluate_predict_and_validation_never_move_centers(self, rng):
        model = logits_model()
        cl.compile_model(model, "adam", metrics=[cl.categorical_accuracy])
        centers = cl.centers_of(model)[0]
        x, y = data(rng)
        model.fit(x, onehot(y), epochs=1, verbose=0)
        before = session().run(centers)
        assert np.any(before)
        model.evaluate(x, onehot(y), verbose=0)
        model.predict(x)
        model.test_on_batch(x, onehot(y))
        np.testing.assert_array_equal(session().run(centers), before)
        model.train_on_batch(x, onehot(y))
        assert not np.array_equal(session().run(centers), before)

    def test_class_seen_only_in_validation_keeps_zero_center(self, rng):
        model = logits_model()
        cl.compile_model(model, "adam")
        x, y = data(rng, classes=C - 1)  # training never sees the last class
        x_val, _ = data(rng, n=16)
        y_val = np.full(16, C - 1)
        model.fit(x, onehot(y), epochs=2, batch_size=16, verbose=0,
                  validation_data=(x_val, onehot(y_val)))
        centers = session().run(cl.centers_of(model)[0])
        assert not np.any(centers[C - 1])
        assert np.all(np.any(centers[:C - 1], axis=1))

    @pytest.mark.parametrize("seed", [0, 1])
    def test_fit_moves_centers_toward_class_means(self, seed):
        """A few real epochs: centers approach each class's mean feature."""
        rng = np.random.default_rng(seed)
        # Weight initialisers, fit's shuffling (numpy's global state) and TF.
        keras.utils.set_random_seed(seed)
        tf.compat.v1.set_random_seed(seed)
        model = embedding_model()
        center = cl.CenterLoss(num_classes=C, alpha=0.5)
        cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                         loss_weights={"logits": 1.0, "embedding": 0.1})
        x, y = data(rng, n=256)
        model.fit(x, {"logits": y, "embedding": y}, epochs=20, batch_size=32, verbose=0)
        features = model.predict(x)[1]
        means = np.stack([features[y == j].mean(axis=0) for j in range(C)])
        centers = session().run(center.centers)
        gap = np.linalg.norm(centers - means, axis=1)
        spread = np.mean([np.linalg.norm(means[j] - means[k]) for j in range(C) for k in range(j)])
        # From zero, the centers end close to the means they chase (relative
        # to how far apart the classes are).
        assert np.all(gap < 0.2 * spread)


class TestSampleWeights:
    """No silent route (issue 8, case 05): Keras's sample_weight and class_weight weight the update."""

    @pytest.mark.parametrize("route", ["sample_weight", "class_weight"])
    def test_keras_weights_move_centers_by_the_weighted_rule(self, rng, route):
        model = embedding_model(trainable=False)
        center = cl.CenterLoss(num_classes=C)
        compile_two_outputs(model, center)
        x, y = data(rng, n=16)
        class_weight = {0: 0.0, 1: 2.0, 2: 1.0, 3: 0.5}
        w = np.array([class_weight[k] for k in y], np.float32)
        kwargs = ({"sample_weight": {"logits": w, "embedding": w}} if route == "sample_weight"
                  else {"class_weight": {"logits": class_weight, "embedding": class_weight}})
        features, centers = frozen_embedding_fit(rng, model, center, y, x, **kwargs)
        want = reference.update_centers(y, features, np.zeros((C, 2)), 0.5, w)
        np.testing.assert_allclose(centers, want, rtol=1e-5, atol=1e-7)
        assert not np.any(centers[0])  # weight 0: never moved

    def test_blog_loss_under_keras_uses_sample_weight(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=16)
        w = rng.choice([0.0, 1.0, 3.0], 16).astype(np.float32)
        logits = model.predict(x)
        model.fit(x, onehot(y), sample_weight=w, batch_size=16, verbose=0)
        np.testing.assert_allclose(session().run(cl.centers_of(model)[0]),
                                   reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA, w),
                                   rtol=1e-5, atol=1e-7)


class Net(keras.Model):
    """A subclassed model: logits, no functional graph."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh", trainable=False)
        self.logits = keras.layers.Dense(C, trainable=False)

    def call(self, inputs):
        return self.logits(self.hidden(inputs))


class FunctionalNet(keras.Model):
    """A functional model built through a subclass."""

    def __init__(self):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="tanh", trainable=False)(inputs)
        super().__init__(inputs, keras.layers.Dense(C, trainable=False)(hidden))


class TestSubclassedModels:
    """No silent route (issue 8, case 06): subclassed models work like functional ones."""

    @pytest.mark.parametrize("make", [Net, FunctionalNet])
    def test_work_like_functional_models(self, rng, tmp_path, make):
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no misleading warning either
            cl.compile_model(model, "sgd", metrics=["accuracy"])
        x, y = data(rng, n=16, classes=C - 1)  # the last class: validation only
        x_val = x[:4]
        y_val = np.full(4, C - 1)
        model.fit(x, onehot(y), batch_size=16, verbose=0, validation_data=(x_val, onehot(y_val)))
        (table,) = cl.centers_of(model)
        logits = model.predict(x)
        trained = session().run(table)
        np.testing.assert_allclose(trained, reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA),
                                   rtol=1e-5, atol=1e-7)
        assert not np.any(trained[C - 1])  # validation never moved it
        model.evaluate(x_val, onehot(y_val), verbose=0)
        np.testing.assert_array_equal(session().run(table), trained)
        model.save_weights(str(tmp_path / "w"))
        session().run(table.assign(np.zeros((C, C))))
        model.load_weights(str(tmp_path / "w"))
        np.testing.assert_array_equal(session().run(table), trained)


class TestOneLossOnTwoOutputs:
    """No silent route (issue 8, case 09): one loss on two outputs is one update on the joint batch."""

    def test_siamese_update_is_the_rule_on_the_joint_batch(self, rng):
        inputs_a, inputs_b = keras.Input((6,)), keras.Input((6,))
        tower = keras.layers.Dense(2, trainable=False)
        model = keras.Model([inputs_a, inputs_b], [tower(inputs_a), tower(inputs_b)])
        center = cl.CenterLoss(num_classes=C)
        cl.compile_model(model, "sgd", loss=[center, center])
        x_a, y_a = data(rng, n=12)
        x_b, y_b = data(rng, n=12)
        centers = np.zeros((C, 2))
        for _ in range(5):
            f_a, f_b = model.predict([x_a, x_b])
            model.fit([x_a, x_b], [y_a, y_b], batch_size=12, verbose=0)
            centers = reference.update_centers(np.concatenate([y_a, y_b]),
                                               np.concatenate([f_a, f_b]), centers, 0.5)
            np.testing.assert_allclose(session().run(center.centers), centers, rtol=1e-5, atol=1e-6)
        assert len(cl.centers_of(model)) == 1
