"""Small Keras 3 models for tests of single steps (issue 14), on the backend
KERAS_BACKEND names: the layer on its model's input, CenterLossModel around
a frozen backbone (C = 5 classes, D = 3, batches of B = 12 with duplicate
labels), one clean step, and what a refused step must leave on each
backend. Import after `keras3_or_skip()` (tests/eager/conftest.py).
"""

import warnings

import keras
import numpy as np
import pytest
import reference
from helpers import skip_torch_compiled_layer
from keras3_batches import centers_of

from cl.keras3 import CenterLoss, CenterLossModel

C, D, B, ALPHA, WEIGHT = 5, 3, 12, 0.5, 0.1

BACKEND = keras.backend.backend()

TF = BACKEND == "tensorflow"

# Keras's torch step runs eagerly on the variables themselves (torch.compile
# too, for CenterLossModel: it falls back to eager around cl's check; the
# plain layer refuses torch.compile): a bad label raises before any change
# and no state is lost.
TORCH = BACKEND == "torch"

TOL = dict(rtol=1e-5, atol=1e-6)

# Where a step cannot raise (TF under XLA, any Keras step on JAX): NaN loss,
# the bad sample left out; else an error before anything changes.
COMPILED = [False, True]



def state_of(model):
    """Every variable of the model and its optimizer, as numpy."""
    return [keras.ops.convert_to_numpy(v.value).copy()
            for v in model.variables + model.optimizer.variables]


def assert_same_state(model, before):
    after = state_of(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def refusal():
    """What a refused step raises: TF's graph assert, or cl's eager check (torch)."""
    if TORCH:
        return ValueError
    import tensorflow as tf
    return tf.errors.InvalidArgumentError


def data(rng, labels_dtype="int32"):
    x = (rng.normal(size=(B, D)) + 3.0).astype("float32")
    y = rng.integers(0, C, B).astype(labels_dtype)
    y[:3] = y[0]  # duplicates
    return x, y


def layer_model(jit=False, with_weights=False, labels_dtype="int32", trainable=True,
                **compile_kwargs):
    skip_torch_compiled_layer(BACKEND, jit)
    x = keras.Input((D,), name="x")
    y = keras.Input((), dtype=labels_dtype, name="y")
    inputs = [x, y]
    layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT, name="center")
    if with_weights:
        inputs.append(keras.Input((), name="w"))
    embedding = layer(inputs)
    logits = keras.layers.Dense(C, name="logits")(keras.layers.Dense(D, name="hidden")(embedding))
    model = keras.Model(inputs, logits)
    layer.trainable = trainable
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit, **compile_kwargs)
    return model, layer


def wrapped_model(jit=False, backbone=None):
    if backbone is None:
        x = keras.Input((D,))
        hidden = keras.layers.Dense(D, name="embedding")(x)
        backbone = keras.Model(x, [keras.layers.Dense(C)(hidden), hidden])
    model = CenterLossModel(backbone, num_classes=C, alpha=ALPHA, weight=WEIGHT)
    model.compile(keras.optimizers.SGD(0.0),  # frozen backbone: known features
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    return model


def warm(model, rng, inputs_of=lambda x, y: [x, y]):
    """One clean step, so the centers are not all zero; returns the state."""
    x, y = data(rng)
    model.train_on_batch(inputs_of(x, y), y)
    return state_of(model)


def step_expecting_refusal(model, layer, inputs, y, bad_positions, x, before, **kwargs):
    """A step on bad data: an error where the backend can raise (nothing
    changed), else a NaN loss with the bad samples left out of the update."""
    if TORCH:
        state = state_of(model)
        with pytest.raises(ValueError, match="No center was changed") as caught:
            model.train_on_batch(inputs, y, **kwargs)
        assert_same_state(model, state)
        return str(caught.value)
    compiled = getattr(model, "jit_compile", False) or not TF
    if not compiled:
        import tensorflow as tf
        state = state_of(model)
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            model.train_on_batch(inputs, y, **kwargs)
        assert_same_state(model, state)
        return str(caught.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = model.train_on_batch(inputs, y, **kwargs)
        centers = centers_of(layer)  # waits for JAX's callback
    assert np.isnan(loss)
    keep = np.ones(B, bool)
    keep[bad_positions] = False
    labels = np.asarray(y)[keep].astype("int64")
    np.testing.assert_allclose(centers, reference.update_centers(labels, x[keep], before, ALPHA),
                               **TOL)
    if TF:
        return None  # XLA cannot raise nor warn: the NaN loss is the signal
    messages = " ".join(str(w.message) for w in caught if w.category is RuntimeWarning)
    assert "were left out of its center update" in messages
    return messages
