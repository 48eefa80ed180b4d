"""`cl.keras3.table` and `cl.keras3.backends`: one table class per backend,
on the one base; a bad label in a compiled step (refused where the backend
can raise, else a NaN loss and the sample left out); a refused step changes
no weight, slot nor iteration; the model stays usable after a bad label.
"""

import warnings

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip

keras = keras3_or_skip()

from keras3_batches import ALPHA, BACKEND, B, C, D, batches, build, centers_of  # noqa: E402
from keras3_steps import (  # noqa: E402
    COMPILED,
    TF,
    TOL,
    TORCH,
    assert_same_state,
    data,
    layer_model,
    refusal,
    warm,
)
from keras3_steps import B as STEP_B  # noqa: E402
from keras3_steps import C as STEP_C  # noqa: E402

from cl.keras3 import CenterLossModel  # noqa: E402


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_out_of_range_labels_in_a_compiled_step(rng, jit):
    if BACKEND == "jax" and not jit:
        pytest.skip("a compiled JAX step is jitted")
    model, layer = build(jit_compile=jit)
    x, y = next(batches(rng, 1))
    model.train_on_batch([x, y], y)
    before = centers_of(layer)
    bad = y.copy()
    bad[3] = C + 5
    if BACKEND == "torch":  # an eager step (torch.compile too): refused before any change
        with pytest.raises(ValueError, match=r"num_classes=7.*No center was changed"):
            model.train_on_batch([x, bad], y)
        assert np.array_equal(centers_of(layer), before)
    elif BACKEND == "tensorflow" and not jit:
        import tensorflow as tf
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=7"):
            model.train_on_batch([x, bad], y)
        assert np.array_equal(centers_of(layer), before)
    else:
        # XLA cannot raise: the loss reads NaN (JAX also warns), and the bad
        # sample is left out of the update.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = model.train_on_batch([x, bad], y)
            keras.ops.convert_to_numpy(layer.centers.value)  # wait for the callback
        assert np.isnan(loss)
        if BACKEND == "jax":
            assert any("out-of-range label(s) [12]" in str(w.message) for w in caught)
        keep = np.arange(B) != 3
        np.testing.assert_allclose(
            centers_of(layer), reference.update_centers(y[keep], x[keep], before, ALPHA),
            rtol=1e-5, atol=1e-6)


def test_one_table_class_per_backend():
    """Issue 22 item 1: the running backend's table is a subclass of the one
    base `cl.keras3.table.Table` (imported, not assembled with type()), in
    its own module; the no-op defaults live in the base only."""
    from cl.keras3 import backends, table
    chosen = backends.table_for(backends.math_backend())
    kind = type(chosen)
    assert kind.__bases__ == (table.Table,)
    assert kind.__module__ == {"tensorflow": "cl.keras3.tf_table", "jax": "cl.keras3.jax_table",
                               "torch": "cl.keras3.torch_table"}[BACKEND]
    assert chosen.backend == backends.math_backend()
    assert not {"after", "hold", "refuse_strategy", "table_options"} & set(vars(kind)) \
        or BACKEND == "tensorflow"
    assert {"read", "subtract"} <= set(vars(kind))


class TestUsableAfterABadLabel:
    """Issue 14 item 10 (Keras 3): JAX with jit off: Keras's fit detaches the variables' values
    for the step; a bad label must not leave them detached."""

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_model_usable_after_fit_with_a_bad_label(self, rng, jit):
        model, layer = layer_model(jit, run_eagerly=not jit)
        x, y = data(rng)
        bad = y.copy()
        bad[0] = STEP_C + 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                model.fit([x, bad], y, batch_size=STEP_B, verbose=0)
            except Exception as error:  # TF without XLA, torch refuse: what they say
                assert (TORCH or TF and not jit) and "num_classes=5" in str(error)
        assert len(model.get_weights()) == 5
        before = centers_of(layer)
        model.fit([x, y], y, batch_size=STEP_B, verbose=0)
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(
            y, x, before, ALPHA), **TOL)


class TestRefusedStepChangesNothing:
    """Issue 14 item 11 (Keras 3): a refused step changes no weight, slot nor iteration."""

    @pytest.mark.skipif(BACKEND == "jax", reason="a Keras step on JAX cannot raise (item 10)")
    def test_layer_step_moves_no_weight_nor_iterations(self, rng):
        model, layer = layer_model()
        before = warm(model, rng)
        x, y = data(rng)
        bad = y.copy()
        bad[4] = -1  # the layer's labels only: the compiled softmax sees good ones
        with pytest.raises(refusal(), match="num_classes=5"):
            model.train_on_batch([x, bad], y)
        assert_same_state(model, before)

    @pytest.mark.skipif(BACKEND == "jax", reason="a Keras step on JAX cannot raise (item 10)")
    def test_center_loss_model_step_moves_nothing(self, rng):
        x_in = keras.Input((D,))
        hidden = keras.layers.BatchNormalization()(keras.layers.Dense(D)(x_in))
        model = CenterLossModel(keras.Model(x_in, [keras.layers.Dense(STEP_C)(hidden), hidden]),
                                num_classes=STEP_C)
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = warm(model, rng, lambda x, y: x)
        x, y = data(rng)
        y[4] = STEP_C
        # The compiled softmax may fail first on the same label: either way
        # every write of the step waits for cl's check, and none runs.
        with pytest.raises(refusal(),
                           match="num_classes=5|outside the valid range"):
            model.train_on_batch(x, y)
        assert_same_state(model, before)

    def test_eager_call_moves_nothing(self, rng):
        model, layer = layer_model()
        before = warm(model, rng)
        x, y = data(rng)
        y[4] = STEP_C
        with pytest.raises(ValueError, match=r"out-of-range label\(s\) \[5\]"):
            model([x, y], training=True)
        assert_same_state(model, before)
