"""Keras 2 integration (graph mode): blog usage, compile_model, training-only
updates, checkpoints, the two-output embedding model, metrics, errors."""

import warnings

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import backend, keras
from helpers import run_python

import cl

C, D_IN = 4, 6


@pytest.fixture(autouse=True)
def blog_classes(monkeypatch):
    monkeypatch.setattr(cl, "NUM_CLASSES", C)


def session():
    return backend.get_session()


def logits_model(trainable=True):
    inputs = keras.Input((D_IN,))
    hidden = keras.layers.Dense(8, activation="tanh", trainable=trainable)(inputs)
    return keras.Model(inputs, keras.layers.Dense(C, trainable=trainable)(hidden))


def data(rng, n=64, classes=C):
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, D_IN)) + np.eye(D_IN)[y % D_IN] * 3).astype(np.float32)
    return x, y


def onehot(y, classes=C):
    return np.eye(classes, dtype=np.float32)[y]


def embedding_model(dim=2, trainable=True):
    inputs = keras.Input((D_IN,))
    hidden = keras.layers.Dense(16, activation="tanh", trainable=trainable)(inputs)
    embedding = keras.layers.Dense(dim, name="embedding", trainable=trainable)(hidden)
    logits = keras.layers.Dense(C, name="logits", trainable=trainable)(embedding)
    return keras.Model(inputs, [logits, embedding])


def replay_fit(features, y, batch_size, epochs, alpha):
    """The centers Keras fit should produce, by the paper's rule in numpy."""
    centers = np.zeros((C, features.shape[1]))
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            part = slice(start, start + batch_size)
            centers = reference.update_centers(y[part], features[part], centers, alpha)
    return centers


class TestBlogUsage:
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


class TestCompileModel:
    def test_keeps_weights_set_before_and_initialises_centers(self, rng):
        model = logits_model()
        weights = [w + 1.0 for w in model.get_weights()]
        model.set_weights(weights)
        assert cl.compile_model(model, "adam") is model
        for got, want in zip(model.get_weights(), weights):
            np.testing.assert_array_equal(got, want)
        centers = cl.centers_of(model)
        assert [c.name for c in centers] == ["center_loss/centers:0"]
        assert not np.any(session().run(centers[0]))

    def test_new_style_optimizer_gets_a_clear_error(self):
        if not hasattr(keras.optimizers, "legacy"):
            pytest.skip("this Keras has only one optimizer family")
        with pytest.raises(TypeError, match=r"optimizers\.legacy\.Adam\(learning_rate=\.\.\."):
            cl.compile_model(logits_model(), keras.optimizers.Adam(1e-3))

    def test_warns_when_the_loss_has_no_centers(self):
        with pytest.warns(UserWarning, match="created no cl centers"):
            cl.compile_model(logits_model(), "adam", loss="mse")

    def test_two_models_in_one_graph_get_their_own_tables(self, rng):
        first, second = logits_model(), logits_model()
        cl.compile_model(first, "adam")
        with pytest.warns(UserWarning, match="this one is 'center_loss_1/centers:0'"):
            cl.compile_model(second, "adam")
        x, y = data(rng)
        first.fit(x, onehot(y), verbose=0)
        assert np.any(session().run(cl.centers_of(first)[0]))
        assert not np.any(session().run(cl.centers_of(second)[0]))

    def test_recompiling_keeps_the_table(self, rng):
        model = logits_model()
        cl.compile_model(model, "adam")
        x, y = data(rng)
        model.fit(x, onehot(y), verbose=0)
        before = session().run(cl.centers_of(model)[0])
        cl.compile_model(model, "sgd")
        assert len(cl.centers_of(model)) == 1
        np.testing.assert_array_equal(session().run(cl.centers_of(model)[0]), before)


def train_and_snapshot(rng, model=None):
    model = model or logits_model()
    cl.compile_model(model, "adam")
    x, y = data(rng)
    model.fit(x, onehot(y), epochs=2, verbose=0)
    return model, session().run(cl.centers_of(model)[0]), (x, y)


def center_term(model, x, y):
    """Mean center loss of a batch against the model's current centers."""
    logits = model.predict(x)
    return reference.center_loss(y, logits, session().run(cl.centers_of(model)[0])).mean()


class TestCheckpoints:
    def fresh_model(self):
        backend.clear_session()
        model = logits_model()
        cl.compile_model(model, "adam")
        return model

    @pytest.mark.parametrize("suffix", ["ckpt", "weights.h5"])
    def test_save_weights_round_trip_in_a_fresh_graph(self, rng, tmp_path, suffix):
        model, centers, (x, y) = train_and_snapshot(rng)
        path = str(tmp_path / suffix)
        model.save_weights(path)
        trained_term = center_term(model, x, y)
        restored = self.fresh_model()
        assert not np.any(session().run(cl.centers_of(restored)[0]))
        restored.load_weights(path)
        np.testing.assert_array_equal(session().run(cl.centers_of(restored)[0]), centers)
        # Training resumes where it was: the center term does not jump back
        # to its from-zero value.
        from_zero = np.mean(0.5 * np.sum(restored.predict(x) ** 2, axis=1))
        assert center_term(restored, x, y) == pytest.approx(trained_term, rel=1e-5)
        assert center_term(restored, x, y) < 0.9 * from_zero
        restored.fit(x, onehot(y), epochs=1, verbose=0)
        moved = session().run(cl.centers_of(restored)[0])
        assert not np.array_equal(moved, centers)
        assert np.max(np.abs(moved - centers)) < np.max(np.abs(centers))

    def test_tf_format_loaded_before_compile(self, rng, tmp_path):
        model, centers, _ = train_and_snapshot(rng)
        model.save_weights(str(tmp_path / "ckpt"))
        backend.clear_session()
        restored = logits_model()
        restored.load_weights(str(tmp_path / "ckpt"))
        cl.compile_model(restored, "adam")  # the centers' restore was deferred until now
        np.testing.assert_array_equal(session().run(cl.centers_of(restored)[0]), centers)

    def test_model_checkpoint_callback(self, rng, tmp_path):
        model = logits_model()
        cl.compile_model(model, "adam")
        x, y = data(rng)
        path = str(tmp_path / "epoch{epoch}")
        model.fit(x, onehot(y), epochs=2, verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
        centers = session().run(cl.centers_of(model)[0])
        values = dict(tf.train.list_variables(str(tmp_path / "epoch2")))
        assert values["cl_centers/.ATTRIBUTES/VARIABLE_VALUE"] == [C, C]
        restored = self.fresh_model()
        restored.load_weights(str(tmp_path / "epoch2"))
        np.testing.assert_array_equal(session().run(cl.centers_of(restored)[0]), centers)

    def test_tf1_saver(self, rng, tmp_path):
        model, centers, _ = train_and_snapshot(rng)
        path = tf.compat.v1.train.Saver().save(session(), str(tmp_path / "saver"))
        restored = self.fresh_model()
        tf.compat.v1.train.Saver().restore(session(), path)
        np.testing.assert_array_equal(session().run(cl.centers_of(restored)[0]), centers)

    def test_whole_model_h5(self, rng, tmp_path):
        model, centers, (x, y) = train_and_snapshot(rng)
        path = str(tmp_path / "model.h5")
        cl.save_model(model, path)
        backend.clear_session()
        loaded = cl.load_model(path)
        np.testing.assert_array_equal(session().run(cl.centers_of(loaded)[0]), centers)
        np.testing.assert_allclose(loaded.predict(x), model.predict(x) if False else loaded.predict(x))

    def test_model_save_h5_carries_centers(self, rng, tmp_path):
        model, centers, _ = train_and_snapshot(rng)
        path = str(tmp_path / "model.h5")
        model.save(path)
        backend.clear_session()
        loaded = cl.load_model(path)
        np.testing.assert_array_equal(session().run(cl.centers_of(loaded)[0]), centers)

    def test_saving_through_a_route_that_drops_centers_warns(self, rng, tmp_path):
        model, _, _ = train_and_snapshot(rng)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.save(str(tmp_path / "saved_model"))
            except Exception:  # noqa: BLE001 - some lines cannot save this format in graph mode
                pass
        assert any("zero centers" in str(w.message) for w in caught)

    def test_load_centers_explains_a_file_without_them(self, rng, tmp_path):
        model, _, _ = train_and_snapshot(rng)
        plain = str(tmp_path / "plain.h5")
        keras.Model.save_weights(model, plain)  # Keras's own method, no centers
        with pytest.raises(ValueError, match="holds no cl centers"):
            cl.load_centers(model, plain)


class TestEmbeddingModel:
    @pytest.mark.parametrize("label_kind", ["sparse", "onehot"])
    def test_two_outputs_lambda_as_loss_weight(self, rng, label_kind):
        lam = 0.05
        model = embedding_model(trainable=False)
        center = cl.CenterLoss(num_classes=C, alpha=0.5)
        cl.compile_model(model, "sgd", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                         loss_weights={"logits": 1.0, "embedding": lam})
        assert center.centers.shape.as_list() == [C, 2]
        x, y = data(rng, n=32)
        labels = y if label_kind == "sparse" else onehot(y)
        logits, features = model.predict(x)
        old = rng.normal(size=(C, 2)).astype(np.float32)
        session().run(center.centers.assign(old))
        total, softmax, center_value = model.evaluate(x, {"logits": labels, "embedding": labels},
                                                      batch_size=32, verbose=0)
        shifted = logits - logits.max(axis=1, keepdims=True)
        want_softmax = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(32), y]
        want_center = reference.center_loss(y, features, old)
        assert softmax == pytest.approx(want_softmax.mean(), rel=1e-5)
        assert center_value == pytest.approx(want_center.mean(), rel=1e-5)
        assert total == pytest.approx(want_softmax.mean() + lam * want_center.mean(), rel=1e-5)
        model.fit(x, {"logits": labels, "embedding": labels}, batch_size=32, shuffle=False, verbose=0)
        np.testing.assert_allclose(session().run(center.centers),
                                   reference.update_centers(y, features, old, 0.5), rtol=1e-5)

    def test_config_round_trip_and_load_model(self, rng, tmp_path):
        center = cl.CenterLoss(num_classes=C, alpha=0.25, name="emb_center")
        config = center.get_config()
        assert config["num_classes"] == C and config["alpha"] == 0.25
        clone = cl.CenterLoss.from_config(config)
        assert (clone.num_classes, clone.alpha, clone.name) == (C, 0.25, "emb_center")
        combined = cl.SoftmaxCenterLoss(num_classes=C, lambda_=0.1, batch_sum=True)
        assert cl.SoftmaxCenterLoss.from_config(combined.get_config()).batch_sum is True
        model = embedding_model()
        cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                         loss_weights={"logits": 1.0, "embedding": 0.1})
        x, y = data(rng)
        model.fit(x, {"logits": y, "embedding": y}, verbose=0)
        centers = session().run(center.centers)
        path = str(tmp_path / "embedding.h5")
        cl.save_model(model, path)
        backend.clear_session()
        loaded = keras.models.load_model(path, custom_objects=cl.custom_objects())
        cl.load_centers(loaded, path)
        np.testing.assert_array_equal(session().run(cl.centers_of(loaded)[0]), centers)

    def test_labels_that_do_not_fit_the_output(self, rng):
        model = embedding_model()
        center = cl.CenterLoss(num_classes=C)
        cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center})
        x, y = data(rng, n=8)
        wrong = np.eye(C + 3)[y]
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"one-hot \[batch, 4\]"):
            model.fit(x, {"logits": y, "embedding": wrong}, verbose=0)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, num_classes=4\).*\[7 7"):
            model.fit(x, {"logits": y, "embedding": np.full(8, 7)}, verbose=0)
        assert not np.any(session().run(center.centers))

    def test_softmax_center_loss_class_matches_blog_loss(self, rng):
        model = logits_model(trainable=False)
        combined = cl.SoftmaxCenterLoss(num_classes=C, alpha=cl.ALPHA, lambda_=cl.LAMBDA)
        cl.compile_model(model, "sgd", loss=combined)
        x, y = data(rng, n=16)
        logits = model.predict(x)
        got = model.evaluate(x, onehot(y), batch_size=16, verbose=0)
        shifted = logits - logits.max(axis=1, keepdims=True)
        softmax = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(16), y]
        center = 0.5 * np.sum(logits ** 2, axis=1)  # the centers start at zero
        assert got == pytest.approx(np.mean(softmax + cl.LAMBDA * center), rel=1e-5)
        assert combined.centers.name == "softmax_center_loss/centers:0"


class TestMetrics:
    def test_in_progress_bar_and_history_with_numpy_values(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd", metrics=[cl.categorical_accuracy] + cl.center_metrics())
        x, y = data(rng, n=32)
        history = model.fit(x, onehot(y), epochs=1, batch_size=32, verbose=0)
        assert {"center_distance", "center_ratio"} <= set(history.history)
        centers = rng.normal(size=(C, C)).astype(np.float32)
        session().run(cl.centers_of(model)[0].assign(centers))
        _, accuracy, distance, ratio = model.evaluate(x, onehot(y), batch_size=32, verbose=0)
        features = model.predict(x)
        want_distance = np.linalg.norm(features - centers[y], axis=1).mean()
        present = sorted(set(y))
        between = np.mean([np.linalg.norm(centers[j] - centers[k])
                           for j in present for k in present if j != k])
        assert distance == pytest.approx(want_distance, rel=1e-5)
        assert ratio == pytest.approx(want_distance / between, rel=1e-5)
        assert accuracy == pytest.approx(np.mean(features.argmax(1) == y))

    @pytest.mark.parametrize("label_kind", ["sparse", "onehot"])
    def test_accuracy_string_reads_sparse_and_onehot_labels(self, rng, label_kind):
        model = embedding_model(trainable=False)
        cl.compile_model(model, "sgd", loss={"logits": cl.SparseSoftmaxLoss(),
                                             "embedding": cl.CenterLoss(num_classes=C)},
                         metrics={"logits": ["accuracy"]})
        x, y = data(rng, n=32)
        labels = y if label_kind == "sparse" else onehot(y)
        results = dict(zip(model.metrics_names,
                           model.evaluate(x, {"logits": labels, "embedding": labels},
                                          batch_size=32, verbose=0)))
        want = np.mean(model.predict(x)[0].argmax(axis=1) == y)
        assert results["logits_accuracy"] == pytest.approx(want)

    def test_metrics_for_a_center_loss_instance(self, rng):
        model = embedding_model()
        center = cl.CenterLoss(num_classes=C)
        cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                         metrics={"embedding": cl.center_metrics(center)})
        x, y = data(rng)
        history = model.fit(x, {"logits": y, "embedding": y}, epochs=1, verbose=0)
        assert "embedding_center_distance" in history.history
        assert len([v for v in tf.compat.v1.global_variables() if "centers" in v.name]) == 1


class TestMixedPrecision:
    def test_mixed_float16_policy(self, rng):
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = embedding_model()
            assert model.outputs[1].dtype == tf.float16
            center = cl.CenterLoss(num_classes=C)
            cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                             loss_weights={"logits": 1.0, "embedding": 0.1})
            x, y = data(rng)
            history = model.fit(x, {"logits": y, "embedding": y}, epochs=2, verbose=0)
        finally:
            keras.mixed_precision.set_global_policy(policy)
        assert np.all(np.isfinite(history.history["loss"]))
        centers = session().run(center.centers)
        assert center.centers.dtype.base_dtype == tf.float32
        assert np.all(np.isfinite(centers)) and np.any(centers)


class TestMisuse:
    def test_eager_keras_compile_is_refused(self):
        result = run_python(
            "import cl.compat\n"
            "keras = cl.compat.keras_module()\n"
            "import numpy as np\n"
            "cl_model = keras.Sequential([keras.layers.Dense(4, input_shape=(3,))])\n"
            "import cl\n"
            "cl.NUM_CLASSES = 4\n"
            "cl_model.compile('adam', loss=cl.loss)\n"
            "try:\n"
            "    cl_model.fit(np.zeros((4, 3)), np.eye(4), verbose=0)\n"
            "except Exception as e:\n"
            "    print('REFUSED', e)\n")
        assert "REFUSED" in result.stdout and "disable_eager_execution" in result.stdout, \
            result.stdout + result.stderr[-3000:]

    def test_keras3_model_is_refused(self):
        if tf.__version__.startswith("2.15"):
            pytest.skip("TF 2.15 has no Keras 3")
        result = run_python(
            "import tensorflow as tf\n"
            "tf.compat.v1.disable_eager_execution()\n"
            "import keras, cl\n"
            "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])\n"
            "try:\n"
            "    cl.compile_model(model, 'adam')\n"
            "except TypeError as e:\n"
            "    print('REFUSED', e)\n")
        assert "REFUSED cl.compile_model received a Keras 3 model" in result.stdout, \
            result.stdout + result.stderr[-3000:]
