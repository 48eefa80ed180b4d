"""`cl.keras3.labels`: class ids and sample weights from what Keras passes the
layer, checked by `cl.rules` before any int cast: labels out of range, one-hot
rows naming no class, non-whole labels (2.5 is not class 2, NaN not class 0),
negative or NaN weights, int64 labels beyond int32. Where the backend can
raise, nothing changes; where it cannot, the bad samples are left out.
"""

import warnings

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip

keras = keras3_or_skip()

from keras3_batches import ALPHA, BACKEND, WEIGHT, C, D, batches, build, centers_of  # noqa: E402
from keras3_steps import (  # noqa: E402
    COMPILED,
    data,
    layer_model,
    step_expecting_refusal,
    warm,
    wrapped_model,
)
from keras3_steps import B as STEP_B  # noqa: E402
from keras3_steps import C as STEP_C  # noqa: E402

from cl.keras3 import CenterLoss  # noqa: E402


def test_out_of_range_labels_change_no_center(rng):
    model, layer = build()
    x, y = next(batches(rng, 1))
    model.train_on_batch([x, y], y)
    before = centers_of(layer)
    bad = y.copy()
    bad[3], bad[9] = C, -1
    with pytest.raises(ValueError, match=r"\[0, num_classes=7\).*\[7, -1\].*\[3, 9\]"):
        layer([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(bad)], training=True)
    assert np.array_equal(centers_of(layer), before)


def test_one_hot_rows_naming_no_class_are_refused(rng):
    model, layer = build()
    x, y = next(batches(rng, 1))
    rows = np.eye(C, dtype="float32")[y]
    rows[5] = 0.0
    rows[6, 0] = np.nan
    with pytest.raises(ValueError, match=r"\[-1, -1\] at batch position\(s\) \[5, 6\].*names no class"):
        layer([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(rows)], training=True)
    assert not np.any(centers_of(layer))


def test_int64_labels_beyond_int32(rng):
    """Issue 21 item 8: JAX without x64 turns an int64 label of 2**32 + 1
    into class 1 before any layer sees it (the layer cannot tell), and it
    trains row 1; TensorFlow and PyTorch hand the layer the int64 value, and
    it is refused. Pinned so that a change in JAX shows here."""
    model, layer = build(labels_dtype="int64")
    x, y = next(batches(rng, 1))
    labels = y.astype("int64")
    labels[5] = 2 ** 32 + 1
    assert y[5] != 1
    if BACKEND != "jax":
        with pytest.raises(Exception, match="4294967297"):
            model.train_on_batch([x, labels], y)
        assert not np.any(centers_of(layer))
        return
    import jax
    if jax.config.jax_enable_x64:
        pytest.skip("JAX with x64 keeps int64 labels: the layer refuses 2**32 + 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # JAX: "int64 ... will be truncated"
        model.train_on_batch([x, labels], y)
    arrived = labels.copy()
    arrived[5] = 1
    np.testing.assert_allclose(centers_of(layer), reference.update_centers(
        arrived, x, np.zeros((C, D), np.float32), ALPHA), rtol=1e-5, atol=1e-6)


class TestNonWholeLabels:
    """Issue 14 item 2 (Keras 3): 2.5 is not class 2 and NaN is not class 0."""

    def test_direct_call_refused_before_any_change(self, rng):
        model, layer = layer_model(labels_dtype="float32")
        warm(model, rng)
        before = centers_of(layer)
        x, y = data(rng, "float32")
        y[3], y[7] = 2.5, np.nan
        with pytest.raises(ValueError, match=r"whole numbers; received label\(s\) \[2\.5, nan\] "
                                             r"at batch position\(s\) \[3, 7\]"):
            layer([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)], training=True)
        np.testing.assert_array_equal(centers_of(layer), before)

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_in_a_step(self, rng, jit):
        model, layer = layer_model(jit, labels_dtype="float32")
        warm(model, rng)
        before = centers_of(layer)
        x, y = data(rng, "float32")
        y[3], y[7] = 2.5, np.nan
        message = step_expecting_refusal(model, layer, [x, y], np.nan_to_num(y), [3, 7], x,
                                         before)
        if message is not None:
            assert "-2147483648" not in message
            assert "2.5" in message and "nan" in message

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_center_loss_model(self, rng, jit):
        model = wrapped_model(jit)
        x, y = data(rng, "float32")
        model.train_on_batch(x, y)
        before = centers_of(model.center_loss)
        x, y = data(rng, "float32")
        y[4] = 2.5
        features = model.predict(x, verbose=0)[1]
        message = step_expecting_refusal(model, model.center_loss, x, y, [4], features, before)
        assert message is None or "2.5" in message


class TestNegativeOrNanWeights:
    """Issue 14 item 4 (Keras 3): negative or NaN sample weights are refused."""

    def test_direct_call_refused_before_any_change(self, rng):
        layer = CenterLoss(STEP_C, alpha=ALPHA, weight=WEIGHT)
        x, y = data(rng)
        w = np.ones(STEP_B, "float32")
        w[2], w[5] = -1.0, np.nan
        with pytest.raises(ValueError, match=r"sample weights must be finite and >= 0.*; received "
                                             r"\[-1\.0, nan\] at batch position\(s\) \[2, 5\]"):
            layer([keras.ops.convert_to_tensor(t) for t in (x, y, w)], training=True)
        assert not np.any(centers_of(layer))

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_in_a_step(self, rng, jit):
        model, layer = layer_model(jit, with_weights=True)
        warm(model, rng, lambda x, y: [x, y, np.ones(STEP_B, "float32")])
        before = centers_of(layer)
        x, y = data(rng)
        w = np.ones(STEP_B, "float32")
        w[2], w[5] = -1.0, np.nan
        message = step_expecting_refusal(model, layer, [x, y, w], y, [2, 5], x, before)
        assert message is None or ("-1" in message and "nan" in message)

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_negative_fit_weight(self, rng, jit):
        model, layer = layer_model(jit)
        warm(model, rng)
        before = centers_of(layer)
        x, y = data(rng)
        w = np.ones(STEP_B, "float32")
        w[6] = -2.0
        step_expecting_refusal(model, layer, [x, y], y, [6], x, before, sample_weight=w)
