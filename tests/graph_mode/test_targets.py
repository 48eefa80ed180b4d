"""`cl.graph.targets`: what Keras 2 passes as `y_true` (class ids `[B]` /
`[B, 1]`, one-hot or soft rows, 16-bit floats) turned into checked class
ids: ids a 16-bit target cannot hold, sparse labels into one-hot losses,
rows naming no class, soft labels, labels that do not fit the output. A
refused batch changes nothing.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import keras
from keras2_models import (
    C,
    all_state,
    compile_two_outputs,
    data,
    embedding_model,
    logits_model,
    onehot,
    session,
)

import cl

pytestmark = pytest.mark.usefixtures("blog_classes")  # cl.NUM_CLASSES = C


class TestMixedPrecisionLabels:
    """No silent route (issue 8, case 01): 16-bit targets refuse class ids they cannot hold exactly;
    a float32 output gets exact ids."""

    @pytest.mark.parametrize("policy, dtype, limit", [("mixed_float16", "float16", 2048),
                                                      ("mixed_bfloat16", "bfloat16", 256)])
    @pytest.mark.parametrize("loss_kind", ["center", "softmax_center"])
    def test_16_bit_targets_refuse_ids_they_cannot_hold(self, rng, policy, dtype, limit, loss_kind):
        classes = 2 * limit + 10
        old = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            inputs = keras.Input((3,))
            if loss_kind == "center":
                output = keras.layers.Dense(2)(inputs)
                loss = cl.CenterLoss(num_classes=classes)
            else:
                output = keras.layers.Dense(classes)(inputs)
                loss = cl.SoftmaxCenterLoss(num_classes=classes)
            model = keras.Model(inputs, output)
            assert model.output.dtype.name == dtype
            cl.compile_model(model, "sgd", loss=loss, metrics=cl.center_metrics(loss))
        finally:
            keras.mixed_precision.set_global_policy(old)
        x = rng.normal(size=(4, 3)).astype(np.float32)
        y = np.array([[1], [limit + 1], [2 * limit + 1], [3]])
        before = all_state(model)
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{dtype}.*only up to {limit}.*float32"):
            model.fit(x, y, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_a_float32_embedding_output_gets_exact_ids(self, rng):
        old = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            inputs = keras.Input((3,))
            hidden = keras.layers.Dense(2, trainable=False)(inputs)
            output = keras.layers.Activation("linear", dtype="float32")(hidden)
            model = keras.Model(inputs, output)
            center = cl.CenterLoss(num_classes=5002)
            cl.compile_model(model, "sgd", loss=center)
        finally:
            keras.mixed_precision.set_global_policy(old)
        x = rng.normal(size=(3, 3)).astype(np.float32)
        y = np.array([2049, 4097, 5001])
        features = model.predict(x)
        model.fit(x, y, batch_size=3, verbose=0)
        want = reference.update_centers(y, features, np.zeros((5002, 2)), 0.5)
        np.testing.assert_allclose(session().run(center.centers), want, rtol=1e-5, atol=1e-6)
        assert set(np.flatnonzero(np.any(want != 0, axis=1))) == {2049, 4097, 5001}


class TestSparseLabelsIntoOneHotLosses:
    """No silent route (issue 8, case 02): class ids into the one-hot losses train their own class."""

    @pytest.mark.parametrize("shape", ["[B]", "[B,1]"])
    @pytest.mark.parametrize("loss_kind", ["cl.loss", "SoftmaxCenterLoss"])
    def test_class_ids_train_their_own_class(self, rng, shape, loss_kind):
        model = logits_model(trainable=False)
        loss = cl.loss if loss_kind == "cl.loss" else cl.SoftmaxCenterLoss(num_classes=C, alpha=cl.ALPHA)
        cl.compile_model(model, "sgd", loss=loss)
        x, y = data(rng, n=16)
        logits = model.predict(x)
        targets = y if shape == "[B]" else y[:, None]
        loss_value = model.evaluate(x, targets, batch_size=16, verbose=0)
        shifted = logits - logits.max(axis=1, keepdims=True)
        softmax = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(16), y]
        lam = cl.LAMBDA if loss_kind == "cl.loss" else loss.lambda_
        want = softmax + lam * reference.center_loss(y, logits, np.zeros((C, C)))
        assert loss_value == pytest.approx(want.mean(), rel=1e-5)
        model.fit(x, targets, batch_size=16, verbose=0)
        np.testing.assert_allclose(session().run(cl.centers_of(model)[0]),
                                   reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA),
                                   rtol=1e-5, atol=1e-7)


class TestUnlabeledOneHotRows:
    """No silent route (issue 8, case 03): one-hot rows naming no class (zeros, NaN) fail and change
    nothing, unless their weight is 0."""

    @pytest.mark.parametrize("marker", ["zeros", "nan"])
    @pytest.mark.parametrize("loss_kind", ["cl.loss", "SoftmaxCenterLoss", "SparseSoftmaxLoss"])
    def test_rows_naming_no_class_fail_and_change_nothing(self, rng, marker, loss_kind):
        model = logits_model()
        loss = {"cl.loss": cl.loss, "SoftmaxCenterLoss": cl.SoftmaxCenterLoss(num_classes=C),
                "SparseSoftmaxLoss": cl.SparseSoftmaxLoss()}[loss_kind]
        model.compile(keras.optimizers.legacy.SGD(0.1) if hasattr(keras.optimizers, "legacy") else "sgd",
                      loss=loss)
        cl.initialize(model)
        x, y = data(rng, n=8)
        targets = onehot(y)
        targets[5] = 0.0 if marker == "zeros" else np.nan
        model.fit(x[:1], onehot(y[:1]), verbose=0)  # make the optimizer's slots
        before = all_state(model)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"must name a class.*\n?.*\[5\]"):
            model.fit(x, targets, batch_size=8, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_weight_zero_masks_an_unlabeled_row(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd", metrics=["accuracy"] + cl.center_metrics())
        x, y = data(rng, n=8)
        targets = onehot(y)
        targets[5] = 0.0
        weights = np.ones(8, np.float32)
        weights[5] = 0.0
        logits = model.predict(x)
        model.fit(x, targets, sample_weight=weights, batch_size=8, verbose=0)
        np.testing.assert_allclose(
            session().run(cl.centers_of(model)[0]),
            reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA, weights), rtol=1e-5, atol=1e-7)


class TestSoftLabels:
    """No silent route (issue 8, case 04): SparseSoftmaxLoss keeps soft labels."""

    def test_sparse_softmax_loss_keeps_label_smoothing(self, rng):
        model = logits_model()
        model.compile("sgd", loss=cl.SparseSoftmaxLoss())
        x, y = data(rng, n=16)
        smooth = onehot(y) * 0.9 + 0.1 / C
        logits = model.predict(x)
        log_softmax = logits - logits.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        want = -(smooth * log_softmax).sum(1).mean()
        assert model.evaluate(x, smooth, batch_size=16, verbose=0) == pytest.approx(want, rel=1e-5)


class TestABadBatchChangesNothing:
    """No silent route (issue 8, case 16): a label out of range fails the step and changes nothing."""

    def test_out_of_range_label_in_a_two_output_fit(self, rng):
        model = embedding_model()
        opt = keras.optimizers.legacy.SGD(0.1, momentum=0.9) if hasattr(keras.optimizers, "legacy") \
            else keras.optimizers.SGD(0.1, momentum=0.9)
        compile_two_outputs(model, cl.CenterLoss(num_classes=C), optimizer=opt)
        x, y = data(rng, n=16)
        model.fit(x, {"logits": y, "embedding": y}, verbose=0)  # slots exist
        before = all_state(model)
        bad = y.copy()
        bad[3] = C + 3
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=4"):
            model.fit(x, {"logits": bad, "embedding": bad}, batch_size=16, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_sparse_softmax_loss_checks_labels(self, rng):
        model = logits_model()
        model.compile("sgd", loss=cl.SparseSoftmaxLoss())
        x, y = data(rng, n=8)
        y[2] = 9
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=4.*\[9\]"):
            model.evaluate(x, y, verbose=0)


class TestLabelsAndOutputs:
    """Labels that do not fit the output are refused, the centers untouched."""

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
