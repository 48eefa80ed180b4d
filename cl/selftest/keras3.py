"""`cl.keras3` on the installed Keras 3 backend: a small model with the
layer, and a `CenterLossModel`: `fit` and `train_on_batch` against the numpy
rule, evaluate and predict moving nothing. Keras is imported inside the
functions: this check runs where TensorFlow is not installed."""

import importlib.metadata

import numpy as np

from cl.selftest import reference
from cl.selftest.reference import ALPHA, BATCH, DIM, NUM_CLASSES, TOLERANCE, WEIGHT


def why_not_keras3():
    try:
        version = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "Keras not installed"
    if int(version.split(".")[0]) < 3:
        return f"Keras {version} is not Keras 3"
    try:
        import keras
    except ImportError as error:
        return f"Keras 3 cannot load its backend: {error}; set KERAS_BACKEND to an installed one"
    from cl.keras3 import backends
    try:
        backends.math_backend()
    except NotImplementedError as error:
        return str(error)
    return reference.eager_off() if keras.backend.backend() == "tensorflow" else None


def _layer_model(keras):
    import cl.keras3
    x = keras.Input((DIM,))
    y = keras.Input((), dtype="int32")
    layer = cl.keras3.CenterLoss(NUM_CLASSES, alpha=ALPHA, weight=WEIGHT)
    model = keras.Model([x, y], keras.layers.Dense(NUM_CLASSES)(layer([x, y])))
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, layer


def _wrapped_model(keras):
    import cl.keras3
    x = keras.Input((DIM,))
    backbone = keras.Model(x, [keras.layers.Dense(NUM_CLASSES)(x), keras.layers.Identity()(x)])
    model = cl.keras3.CenterLossModel(backbone, NUM_CLASSES, alpha=ALPHA, weight=WEIGHT)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, model.center_loss


def _keras3_run(keras, rng, build, wrapped):
    """Fit 2 epochs of 2 batches, one train_on_batch, then evaluate and
    predict; the embedding is the input, so the rule can be replayed.
    Returns (max error of the centers, loss error, what evaluate+predict moved)."""
    model, layer = build(keras)
    steps = [reference.batch(rng) for _ in range(2)]
    x = np.concatenate([s[1] for s in steps])
    y = np.concatenate([s[0] for s in steps]).astype(np.int32)
    inputs = x if wrapped else [x, y]
    model.fit(inputs, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    centers = lambda: keras.ops.convert_to_numpy(layer.centers)  # noqa: E731
    expected = reference.replay(np.zeros((NUM_CLASSES, DIM)), steps * 2)
    error = reference.max_error(centers(), expected)
    labels, features = reference.batch(rng)
    one = features if wrapped else [features, labels.astype(np.int32)]
    logits = model.predict_on_batch(one)
    logits = np.asarray(logits[0] if wrapped else logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    softmax = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(BATCH), labels]
    term = reference.numpy_step(labels, features, expected, ALPHA)[0]
    want = np.mean(softmax) + WEIGHT * np.mean(term)
    got = float(model.train_on_batch(one, labels.astype(np.int32), return_dict=True)["loss"])
    expected = reference.numpy_step(labels, features, expected, ALPHA)[1]
    error = max(error, reference.max_error(centers(), expected))
    before = centers()
    model.evaluate(inputs, y, batch_size=BATCH, verbose=0)
    model.predict(inputs, batch_size=BATCH, verbose=0)
    return error, abs(got - want) / (1 + abs(want)), reference.max_error(centers(), before)


def check_keras3(rng):
    """`(header, [(description, ok)])` for cl.keras3 on this Keras 3 backend."""
    import keras
    checks = []
    for name, build, wrapped in (("CenterLoss layer", _layer_model, False),
                                 ("CenterLossModel", _wrapped_model, True)):
        error, loss_error, moved = _keras3_run(keras, rng, build, wrapped)
        checks += [
            (f"{name}: centers vs numpy after fit (4 steps) and train_on_batch "
             f"(max err {error:.2e})", error < TOLERANCE),
            (f"{name}: train_on_batch loss = cross-entropy + {WEIGHT} * mean center "
             f"loss (rel err {loss_error:.2e})", loss_error < TOLERANCE),
            (f"{name}: evaluate and predict move nothing (moved {moved:.2e})", moved == 0),
        ]
    header = (f"keras3: cl.keras3 on Keras {keras.__version__}, {keras.backend.backend()} "
              f"backend, num_classes={NUM_CLASSES}, dim={DIM}, batch={BATCH}, alpha={ALPHA}")
    return header, checks
