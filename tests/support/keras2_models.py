"""The small Keras 2 models and batches the graph-mode Keras 2 tests share:
C = 4 classes, D_IN = 6 inputs; a logits model, a two-output (logits,
embedding) model, one-hot targets, a trained logits model, and every
variable a training step could change. Graph mode only: import it from
tests/graph_mode/ (its conftest turns eager execution off first).
"""

import numpy as np

import cl
from cl import compat

keras = compat.keras_module()
backend = compat.keras_backend()

C, D_IN = 4, 6


def session():
    return backend.get_session()


def logits_model(trainable=True):
    inputs = keras.Input((D_IN,))
    hidden = keras.layers.Dense(8, activation="tanh", trainable=trainable)(inputs)
    return keras.Model(inputs, keras.layers.Dense(C, trainable=trainable)(hidden))


def data(rng, n=64, classes=C):
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, D_IN)) + np.eye(D_IN)[y % D_IN] * 3).astype(np.float32)
    return x, y


def onehot(y, classes=C):
    return np.eye(classes, dtype=np.float32)[y]


def embedding_model(dim=2, trainable=True):
    inputs = keras.Input((D_IN,))
    hidden = keras.layers.Dense(16, activation="tanh", trainable=trainable)(inputs)
    embedding = keras.layers.Dense(dim, name="embedding", trainable=trainable)(hidden)
    logits = keras.layers.Dense(C, name="logits", trainable=trainable)(embedding)
    return keras.Model(inputs, [logits, embedding])


def values(variables):
    return [np.array(v) for v in session().run(list(variables))]


def all_state(model):
    """Every variable a training step could change."""
    return values(model.weights + model.optimizer.weights + cl.centers_of(model))


def frozen_embedding_fit(rng, model, center, y_fit, x, **fit_kwargs):
    features = model.predict(x)[1]
    model.fit(x, {"logits": y_fit, "embedding": y_fit}, batch_size=len(x), shuffle=False,
              verbose=0, **fit_kwargs)
    return features, session().run(center.centers)


def compile_two_outputs(model, center, optimizer="sgd", **kwargs):
    return cl.compile_model(model, optimizer, loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                            loss_weights={"logits": 1.0, "embedding": 0.1}, **kwargs)


def trained_logits_model(rng):
    """A logits model compiled with the blog's loss and fit 2 epochs; its
    trained centers."""
    model = logits_model()
    cl.compile_model(model, "sgd")
    x, y = data(rng, n=32)
    model.fit(x, onehot(y), epochs=2, verbose=0)
    return model, session().run(cl.centers_of(model)[0])
