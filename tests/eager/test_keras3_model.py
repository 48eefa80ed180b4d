"""`cl.keras3.model`: CenterLossModel, `fit(x, y)` with the labels as targets
only, around a backbone `x -> (logits, embedding)`: against the numpy
reference, the loss adding the center term, .keras files, fit's weights,
freezing, subclassed backbones, and backbones that do not output
(logits, embedding), refused before any change.
"""

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip

keras = keras3_or_skip()

from keras3_batches import ALPHA, WEIGHT, B, C, D, batches, centers_of  # noqa: E402
from keras3_steps import COMPILED, TOL, data, wrapped_model  # noqa: E402
from keras3_steps import B as STEP_B  # noqa: E402
from keras3_steps import C as STEP_C  # noqa: E402

from cl.keras3 import CenterLossModel  # noqa: E402


class TestCenterLossModel:
    """Labels only as targets: fit(x, y), no dummy inputs."""

    def build(self, jit=False):
        x = keras.Input((D,))
        hidden = keras.layers.Dense(D, name="embedding")(x)
        logits = keras.layers.Dense(C)(hidden)
        backbone = keras.Model(x, [logits, hidden])
        model = CenterLossModel(backbone, num_classes=C, alpha=ALPHA, weight=WEIGHT)
        model.compile(keras.optimizers.SGD(0.0),  # frozen backbone: known features
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["sparse_categorical_accuracy"], jit_compile=jit)
        features = keras.Model(x, hidden)
        return model, features

    @pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
    def test_fit_with_targets_only_follows_the_reference(self, rng, jit):
        model, features = self.build(jit)
        data = list(batches(rng, 3))
        x = np.concatenate([b[0] for b in data])
        y = np.concatenate([b[1] for b in data])
        history = model.fit(x, y, batch_size=B, shuffle=False, verbose=0)
        assert "sparse_categorical_accuracy" in history.history
        expected = np.zeros((C, D), np.float32)
        for xb, yb in data:
            expected = reference.update_centers(yb, features.predict(xb, verbose=0), expected, ALPHA)
        np.testing.assert_allclose(centers_of(model.center_loss), expected, rtol=1e-5, atol=1e-6)
        after = centers_of(model.center_loss)
        model.evaluate(x, y, verbose=0)
        logits, embedding = model.predict(x, verbose=0)
        assert logits.shape == (len(x), C) and embedding.shape == (len(x), D)
        assert np.array_equal(centers_of(model.center_loss), after)

    def test_loss_adds_the_center_term(self, rng):
        model, features = self.build()
        x, y = next(batches(rng, 1))
        model.train_on_batch(x, y)
        x, y = next(batches(rng, 1))
        centers = centers_of(model.center_loss)
        softmax = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y, model.predict(x, verbose=0)[0])
        term = WEIGHT * reference.center_loss(y, features.predict(x, verbose=0), centers).mean()
        result = model.evaluate(x, y, verbose=0, return_dict=True)
        np.testing.assert_allclose(result["loss"], float(softmax) + term, rtol=1e-5)

    def test_keras_file_round_trip_is_exact(self, rng, tmp_path):
        model, _ = self.build()
        x, y = next(batches(rng, 1))
        model.train_on_batch(x, y)
        model.save(tmp_path / "wrapped.keras")
        loaded = keras.models.load_model(tmp_path / "wrapped.keras")
        assert isinstance(loaded, CenterLossModel)
        assert np.array_equal(centers_of(loaded.center_loss), centers_of(model.center_loss))
        assert not np.all(centers_of(loaded.center_loss) == 0)


class OneOutput(keras.Model):
    """A subclassed backbone that returns the logits only."""

    def __init__(self):
        super().__init__()
        self.head = keras.layers.Dense(C)

    def call(self, x):
        return self.head(x)


class TestBackboneOutputs:
    """Issue 21 item 7: a backbone must output (logits, embedding); cl says
    so, naming what it got, before any weight or center changes: at
    construction where its outputs are known, else at build / first call /
    first fit."""

    MESSAGE = r"backbone must output \(logits, embedding\); it returned "

    def test_known_outputs_refused_at_construction(self):
        x = keras.Input((D,))
        logits = keras.layers.Dense(C)(x)
        one = r"one tensor of shape \(None, 7\)"
        for backbone, got in [
                (keras.Model(x, logits), one),
                (keras.Sequential([keras.Input((D,)), keras.layers.Dense(C)]), one),
                (keras.Model(x, [logits, x, x]), r"3 outputs of shapes \[\(None, 7\), "
                                                 r"\(None, 3\), \(None, 3\)\]")]:
            with pytest.raises(ValueError, match=self.MESSAGE + got):
                CenterLossModel(backbone, num_classes=C)

    @pytest.mark.parametrize("route", ["fit", "call", "build"])
    @pytest.mark.parametrize("kind", ["sequential", "subclassed"])
    def test_unbuilt_refused_before_any_change(self, rng, kind, route):
        backbone = keras.Sequential([keras.layers.Dense(C)]) if kind == "sequential" \
            else OneOutput()
        model = CenterLossModel(backbone, num_classes=C)
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = next(batches(rng, 1))
        with pytest.raises(ValueError, match=self.MESSAGE + r"one tensor of shape \((None|16), 7\)"):
            if route == "fit":
                model.fit(x, y, batch_size=B, verbose=0)
            elif route == "call":
                model(x)
            else:
                model.build((None, D))
        assert not model.center_loss.built and int(model.optimizer.iterations) == 0


class TestFitWeightsReachTheUpdate:
    """Issue 14 item 1 (Keras 3): CenterLossModel keeps fit's sample weights."""

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_center_loss_model_keeps_fit_weights(self, rng, jit):
        # jit on torch too: torch.compile passes compute_loss its weights
        model = wrapped_model(jit)
        x, y = data(rng)
        w = rng.uniform(0.5, 2.0, STEP_B).astype("float32")
        w[y == y[0]] = 0.0
        model.fit(x, y, sample_weight=w, batch_size=STEP_B, verbose=0)
        features = model.predict(x, verbose=0)[1]
        np.testing.assert_allclose(centers_of(model.center_loss), reference.update_centers(
            y, features, np.zeros((STEP_C, D), np.float32), ALPHA, w), **TOL)


class TestFreezing:
    """Issue 14 item 5 (Keras 3): a frozen CenterLossModel keeps its centers."""

    def test_frozen_center_loss_model(self, rng):
        model = wrapped_model()
        x, y = data(rng)
        model.train_on_batch(x, y)
        before = centers_of(model.center_loss)
        model.trainable = False
        model.compile(keras.optimizers.SGD(0.0),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, verbose=0)
        np.testing.assert_array_equal(centers_of(model.center_loss), before)


class SubclassedBackbone(keras.Model):
    """`call` returns (logits, embedding); no compute_output_shape."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(D)
        self.head = keras.layers.Dense(STEP_C)

    def call(self, x):
        embedding = self.hidden(x)
        return self.head(embedding), embedding


class TestSubclassedBackbone:
    """Issue 14 item 12 (Keras 3): a subclassed backbone (no compute_output_shape)."""

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_fit_follows_the_reference(self, rng, jit):
        model = wrapped_model(jit, SubclassedBackbone())
        data_ = [data(rng) for _ in range(2)]
        x = np.concatenate([b[0] for b in data_])
        y = np.concatenate([b[1] for b in data_])
        model.fit(x, y, batch_size=STEP_B, shuffle=False, verbose=0)
        assert model.centers.shape == (STEP_C, D)
        expected = np.zeros((STEP_C, D), np.float32)
        for xb, yb in data_:
            expected = reference.update_centers(
                yb, model.predict(xb, verbose=0)[1], expected, ALPHA)
        np.testing.assert_allclose(centers_of(model.center_loss), expected, **TOL)
