"""`cl.keras2.compiling`: `cl.compile_model` compiles, then initialises what
the loss created in the session Keras uses; it refuses what cannot work
(a new-style optimizer, a Keras 3 model) and warns when no table was made.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import keras
from helpers import run_python
from keras2_models import logits_model, session

import cl

pytestmark = pytest.mark.usefixtures("blog_classes")  # cl.NUM_CLASSES = C


class TestCompileModel:
    """Compile, initialise, keep the weights set before."""

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


class TestMisuse:
    """What cannot work is refused, saying why."""

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
