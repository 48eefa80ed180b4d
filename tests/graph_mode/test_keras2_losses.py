"""`cl.keras2.losses`: CenterLoss on an embedding output (lambda as the loss
weight, sparse or one-hot labels), SoftmaxCenterLoss as the blog's loss,
their configs through save and load, and a mixed_float16 model.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import backend, keras
from keras2_models import C, data, embedding_model, logits_model, onehot, session

import cl

pytestmark = pytest.mark.usefixtures("blog_classes")  # cl.NUM_CLASSES = C


class TestEmbeddingModel:
    """CenterLoss on the embedding of a two-output model."""

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
                                   reference.update_centers(y, features, old, 0.5), rtol=1e-5,
                                   atol=1e-6)

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


class TestMixedPrecision:
    """A mixed_float16 model keeps float32 centers."""

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
