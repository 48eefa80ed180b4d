"""The Keras 3 layer on a model's input, for the tests of `cl.keras3`: the
embedding fed to the layer is the model's input itself, so the features of
every step are known exactly and the centers can be replayed in numpy.
C = 7 classes, D = 3, batches of B = 16 drawn from classes 0-4 (5 and 6 stay
absent). Import after `keras3_or_skip()` (tests/eager/conftest.py).
"""

import keras
import numpy as np
from helpers import skip_torch_compiled_layer

from cl.keras3 import CenterLoss

C, D, B, ALPHA, WEIGHT = 7, 3, 16, 0.5, 0.1

PRESENT = 5  # labels drawn from 0..4: classes 5 and 6 stay absent

BACKEND = keras.backend.backend()



def centers_of(layer):
    return keras.ops.convert_to_numpy(layer.centers.value).copy()


def build(with_weights=False, optimizer=None, labels_dtype="int32", **compile_kwargs):
    skip_torch_compiled_layer(BACKEND, compile_kwargs.get("jit_compile"))
    x = keras.Input((D,), name="x")
    y = keras.Input((), dtype=labels_dtype, name="y")
    inputs = [x, y]
    layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT, name="center")
    if with_weights:
        w = keras.Input((), name="w")
        inputs.append(w)
        embedding = layer([x, y, w])
    else:
        embedding = layer([x, y])
    logits = keras.layers.Dense(C, name="logits")(keras.layers.Dense(D, name="hidden")(embedding))
    model = keras.Model(inputs, logits)
    model.compile(optimizer or keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
    return model, layer


def batches(rng, steps, nan_at=None):
    for step in range(steps):
        x = rng.normal(size=(B, D)).astype("float32") + 3.0
        y = rng.integers(0, PRESENT, B).astype("int32")
        y[:4] = y[0]  # duplicates in every batch
        if step == nan_at:
            x[2, 1] = np.nan
        yield x, y
