"""Issue 14, Keras 3 part: routes that were silent or unclear, on the backend
KERAS_BACKEND names. One class per item of the issue.

As in test_keras3.py the layer sits on the model's input, so the features
of every step are known and the centers can be replayed in numpy.
"""

import textwrap
import warnings

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip
from helpers import fresh_torch_compile, run_python, skip_torch_compiled_layer

keras = keras3_or_skip()
from cl.keras3 import CenterLoss, CenterLossModel  # noqa: E402

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


def centers_of(layer):
    return keras.ops.convert_to_numpy(layer.centers.value).copy()


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


class TestItem1FitWeightsReachTheUpdate:
    """fit's sample_weight / class_weight weight the layer's update."""

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_fit_sample_weight(self, rng, jit):
        model, layer = layer_model(jit)
        expected = np.zeros((C, D), np.float32)
        for _ in range(3):
            x, y = data(rng)
            w = rng.uniform(0.5, 2.0, B).astype("float32")
            w[1] = 0.0  # a weight-0 sample
            w[y == y[5]] = 0.0  # a weight-0 class: its center must not move
            row = centers_of(layer)[y[5]]
            model.fit([x, y], y, sample_weight=w, batch_size=B, verbose=0, shuffle=False)
            expected = reference.update_centers(y, x, expected, ALPHA, w)
            np.testing.assert_allclose(centers_of(layer), expected, **TOL)
            np.testing.assert_array_equal(centers_of(layer)[y[5]], row)
        assert np.abs(expected).sum() > 1  # the rule moved something

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_class_weight(self, rng, jit):
        model, layer = layer_model(jit)
        class_weight = {0: 0.0, 1: 2.0, 2: 1.0, 3: 0.5, 4: 1.0}
        x, y = data(rng)
        y[:4] = 0  # class 0, at weight 0, is present
        model.fit([x, y], y, class_weight=class_weight, batch_size=B, verbose=0)
        w = np.array([class_weight[k] for k in y], "float32")
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(
            y, x, np.zeros((C, D), np.float32), ALPHA, w), **TOL)
        assert np.all(centers_of(layer)[0] == 0)

    def test_fit_weights_times_the_weights_input(self, rng):
        model, layer = layer_model(with_weights=True)
        x, y = data(rng)
        w_input = rng.uniform(0.5, 2.0, B).astype("float32")
        w_fit = rng.uniform(0.5, 2.0, B).astype("float32")
        w_fit[:2] = 0.0
        model.train_on_batch([x, y, w_input], y, sample_weight=w_fit)
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(
            y, x, np.zeros((C, D), np.float32), ALPHA, w_input * w_fit), **TOL)

    def test_the_term_is_weighted_too(self, rng):
        model, layer = layer_model()
        warm(model, rng)
        centers = centers_of(layer)
        x, y = data(rng)
        w = rng.uniform(0.0, 2.0, B).astype("float32")
        softmax = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y, model.predict([x, y], verbose=0), sample_weight=w)
        # Keras divides a weighted loss by the batch size; so does the term.
        term = WEIGHT * np.mean(w * reference.center_loss(y, x, centers))
        loss = model.evaluate([x, y], y, sample_weight=w, verbose=0)
        np.testing.assert_allclose(loss, float(softmax) + term, rtol=1e-5)
        np.testing.assert_array_equal(centers_of(layer), centers)

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_center_loss_model_keeps_fit_weights(self, rng, jit):
        # jit on torch too: torch.compile passes compute_loss its weights
        model = wrapped_model(jit)
        x, y = data(rng)
        w = rng.uniform(0.5, 2.0, B).astype("float32")
        w[y == y[0]] = 0.0
        model.fit(x, y, sample_weight=w, batch_size=B, verbose=0)
        features = model.predict(x, verbose=0)[1]
        np.testing.assert_allclose(centers_of(model.center_loss), reference.update_centers(
            y, features, np.zeros((C, D), np.float32), ALPHA, w), **TOL)


class TestItem2NonWholeLabels:
    """2.5 is not class 2 and NaN is not class 0."""

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


class Siamese(keras.Model):
    """One CenterLoss layer called on two embeddings in `call`."""

    def __init__(self):
        super().__init__()
        self.center = CenterLoss(C, alpha=ALPHA, weight=WEIGHT)
        self.head = keras.layers.Dense(C)

    def call(self, inputs, training=None):
        a, b, ya, yb = inputs
        return self.head(keras.ops.concatenate(
            [self.center([a, ya], training=training), self.center([b, yb], training=training)], 1))


class TestItem3OneLayerTwoEmbeddings:
    """A second call with labels is refused before any update."""

    def test_refused_when_building_a_functional_model(self):
        a, b = keras.Input((D,)), keras.Input((D,))
        ya, yb = keras.Input((), dtype="int32"), keras.Input((), dtype="int32")
        layer = CenterLoss(C)
        layer([a, ya])
        with pytest.raises(ValueError, match="called a second time with labels in a model.*"
                                             "concatenated along the batch axis"):
            layer([b, yb])
        layer(b)  # without labels (inference) it is a pass-through

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_refused_in_a_step(self, rng, jit):
        model = Siamese()
        model.compile(keras.optimizers.SGD(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit)
        (xa, ya), (xb, yb) = data(rng), data(rng)
        model([xa, xb, ya, yb])  # builds it (no training, no update)
        before = [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]
        # torch.compile: refused earlier, for hiding fit's weights
        error, match = ((NotImplementedError, "torch.compile") if TORCH and jit else
                        (ValueError, "called a second time with labels in one step"))
        if TORCH and jit:
            fresh_torch_compile()
        with pytest.raises(error, match=match):
            model.train_on_batch([xa, xb, ya, yb], ya)
        for v, b in zip(model.variables, before):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), b)

    def test_concatenated_call_is_the_joint_rule(self, rng):
        (xa, ya), (xb, yb) = data(rng), data(rng)
        layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT)
        layer.build((None, D))
        layer.centers.assign(rng.normal(size=(C, D)).astype("float32"))
        old = centers_of(layer)
        x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
        layer([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)], training=True)
        np.testing.assert_allclose(float(layer.losses[0]),
                                   WEIGHT * reference.center_loss(y, x, old).mean(), rtol=1e-5)
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(y, x, old, ALPHA),
                                   **TOL)


class TestItem4NegativeOrNanWeights:
    def test_direct_call_refused_before_any_change(self, rng):
        layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT)
        x, y = data(rng)
        w = np.ones(B, "float32")
        w[2], w[5] = -1.0, np.nan
        with pytest.raises(ValueError, match=r"sample weights must be finite and >= 0.*; received "
                                             r"\[-1\.0, nan\] at batch position\(s\) \[2, 5\]"):
            layer([keras.ops.convert_to_tensor(t) for t in (x, y, w)], training=True)
        assert not np.any(centers_of(layer))

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_in_a_step(self, rng, jit):
        model, layer = layer_model(jit, with_weights=True)
        warm(model, rng, lambda x, y: [x, y, np.ones(B, "float32")])
        before = centers_of(layer)
        x, y = data(rng)
        w = np.ones(B, "float32")
        w[2], w[5] = -1.0, np.nan
        message = step_expecting_refusal(model, layer, [x, y, w], y, [2, 5], x, before)
        assert message is None or ("-1" in message and "nan" in message)

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_negative_fit_weight(self, rng, jit):
        model, layer = layer_model(jit)
        warm(model, rng)
        before = centers_of(layer)
        x, y = data(rng)
        w = np.ones(B, "float32")
        w[6] = -2.0
        step_expecting_refusal(model, layer, [x, y], y, [6], x, before, sample_weight=w)


class TestItem5Freezing:
    @pytest.mark.parametrize("how", ["layer", "model"])
    def test_frozen_layer_keeps_its_centers(self, rng, how):
        model, layer = layer_model()
        warm(model, rng)
        before = centers_of(layer)
        (layer if how == "layer" else model).trainable = False
        model.compile(keras.optimizers.SGD(0.01),  # Keras applies trainable at compile
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = data(rng)
        loss = model.train_on_batch([x, y], y)
        assert np.isfinite(loss)
        np.testing.assert_array_equal(centers_of(layer), before)
        layer.trainable = True
        model.trainable = True
        model.compile(keras.optimizers.SGD(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch([x, y], y)
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(
            y, x, before, ALPHA), **TOL)

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


@pytest.mark.skipif(not TF, reason="tf.distribute is TensorFlow's")
class TestItem6Strategies:
    def test_every_route_of_an_unsupported_strategy_refused_before_any_change(self):
        # MirroredStrategy is exact (tests/eager/test_keras3_tf_table.py);
        # CentralStorageStrategy would update one table per replica.
        code = textwrap.dedent("""
            import numpy as np, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            import keras
            from cl.keras3 import CenterLoss, CenterLossModel
            strategy = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
            def refused(build):
                try:
                    build()
                except NotImplementedError as error:
                    return "does not support CentralStorageStrategy" in str(error)
                return False
            def functional():
                x, y = keras.Input((3,)), keras.Input((), dtype="int32")
                keras.Model([x, y], CenterLoss(5)([x, y]))
            def wrapped():
                x = keras.Input((3,))
                CenterLossModel(keras.Model(x, [keras.layers.Dense(5)(x), x]), 5)
            with strategy.scope():
                print("functional", refused(functional))
                print("wrapped", refused(wrapped))
            layer = CenterLoss(5)  # built outside, called under the strategy
            layer.build((None, 3))
            x = tf.ones((4, 3)); y = tf.constant([0, 1, 1, 2])
            print("run", refused(lambda: strategy.run(
                tf.function(lambda: layer([x, y], training=True)))))
            print("unchanged", not np.any(layer.centers.numpy()))
        """)
        result = run_python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["functional", "True", "wrapped", "True", "run", "True",
                                         "unchanged", "True"], result.stdout


class TestItem10UsableAfterABadLabel:
    """JAX with jit off: Keras's fit detaches the variables' values for the
    step; a bad label must not leave them detached."""

    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_model_usable_after_fit_with_a_bad_label(self, rng, jit):
        model, layer = layer_model(jit, run_eagerly=not jit)
        x, y = data(rng)
        bad = y.copy()
        bad[0] = C + 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                model.fit([x, bad], y, batch_size=B, verbose=0)
            except Exception as error:  # TF without XLA, torch refuse: what they say
                assert (TORCH or TF and not jit) and "num_classes=5" in str(error)
        assert len(model.get_weights()) == 5
        before = centers_of(layer)
        model.fit([x, y], y, batch_size=B, verbose=0)
        np.testing.assert_allclose(centers_of(layer), reference.update_centers(
            y, x, before, ALPHA), **TOL)


class TestItem11RefusedStepChangesNothing:
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
        model = CenterLossModel(keras.Model(x_in, [keras.layers.Dense(C)(hidden), hidden]),
                                num_classes=C)
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = warm(model, rng, lambda x, y: x)
        x, y = data(rng)
        y[4] = C
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
        y[4] = C
        with pytest.raises(ValueError, match=r"out-of-range label\(s\) \[5\]"):
            model([x, y], training=True)
        assert_same_state(model, before)


class SubclassedBackbone(keras.Model):
    """`call` returns (logits, embedding); no compute_output_shape."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(D)
        self.head = keras.layers.Dense(C)

    def call(self, x):
        embedding = self.hidden(x)
        return self.head(embedding), embedding


class TestItem12SubclassedBackbone:
    @pytest.mark.parametrize("jit", COMPILED, ids=["plain", "jit"])
    def test_fit_follows_the_reference(self, rng, jit):
        model = wrapped_model(jit, SubclassedBackbone())
        data_ = [data(rng) for _ in range(2)]
        x = np.concatenate([b[0] for b in data_])
        y = np.concatenate([b[1] for b in data_])
        model.fit(x, y, batch_size=B, shuffle=False, verbose=0)
        assert model.centers.shape == (C, D)
        expected = np.zeros((C, D), np.float32)
        for xb, yb in data_:
            expected = reference.update_centers(
                yb, model.predict(xb, verbose=0)[1], expected, ALPHA)
        np.testing.assert_allclose(centers_of(model.center_loss), expected, **TOL)
