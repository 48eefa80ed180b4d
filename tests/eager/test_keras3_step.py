"""`cl.keras3.step`, the one module that reads Keras's internals: inside fit's
step a layer sees the model, fit's sample weights, a token of the forward
pass and (JAX) the stateless scope. Fails when Keras changes them.
"""

import numpy as np
from conftest import keras3_or_skip

keras = keras3_or_skip()

from keras3_batches import BACKEND, B, D  # noqa: E402


def test_step_reads_what_keras_runs(rng):
    """Issue 22 item 1: `cl.keras3.step`, the one module using Keras's
    internals, still reads them: inside fit's step a layer sees the model,
    fit's sample weights, a token of the forward pass and (JAX) the
    stateless scope; a model lists its nested layers; a replica's loss
    share is the loss without a strategy. Fails when Keras changes them."""
    from cl.keras3 import step
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x):
            model, weights = step.keras_step()
            if model is not None:  # not the symbolic calls that build the models
                seen.append((model, None if weights is None else len(weights.shape),
                             step.step_token() is not None, step.stateless_scope() is not None))
            return x

    probe = Probe()
    inner = keras.Sequential([keras.Input((D,)), probe])
    model = keras.Sequential([keras.Input((D,)), inner, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = rng.normal(size=(B, D)).astype("float32")
    model.fit(x, np.zeros((B, 1)), sample_weight=np.ones(B, "float32"), batch_size=B, verbose=0)
    assert seen and all(entry == (model, 1, True, BACKEND == "jax") for entry in seen), seen
    assert probe in step.layers_of(model)
    assert float(keras.ops.convert_to_numpy(step.replica_share(2.0))) == 2.0
    assert step.keras_step() == (None, None)
