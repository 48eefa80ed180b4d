"""The two Keras 3 models the multi-device scripts train: the CenterLoss
layer in a functional model and `CenterLossModel`, on an identity
embedding (the features fed are the features the centers see). Import
after KERAS_BACKEND is set.

Each builder returns `(model, centers variable, data)`, `data(labels,
features)` giving the model's `(x, y)` for that batch."""

import keras
import numpy as np

import cl.keras3


def layer_model(num_classes, dim, batch, alpha, learning_rate):
    x = keras.Input((dim,))
    y = keras.Input((), dtype="int32")
    layer = cl.keras3.CenterLoss(num_classes, alpha=alpha, weight=0.1)
    head = keras.layers.Dense(3)(layer([keras.layers.Identity()(x), y]))
    model = keras.Model([x, y], head)
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    return model, layer.centers, lambda labels, features: ([features, labels], np.zeros((batch, 3)))


def wrapped_model(num_classes, dim, alpha, learning_rate):
    x = keras.Input((dim,))
    backbone = keras.Model(x, [keras.layers.Dense(3)(x), keras.layers.Identity()(x)])
    model = cl.keras3.CenterLossModel(backbone, num_classes, alpha=alpha, weight=0.1)
    model.compile(keras.optimizers.SGD(learning_rate),
                  lambda y_true, y_pred: keras.ops.mean(keras.ops.square(y_pred), axis=-1))
    return model, model.centers, lambda labels, features: (features, labels)
