"""The eager front-ends' part of `python -m cl` (see `cl/__main__.py`).

`cl.keras3` on the installed Keras 3 backend (a small model with the layer,
and a `CenterLossModel`: `fit` and `train_on_batch` against the numpy rule,
evaluate and predict moving nothing) and `cl.tf2` (a `tf.function` step:
loss, gradient and centers against the numpy rule). `why_not_*` say why a
front-end cannot run in this environment (None when it can). Every check
reads the rule as `selftest.numpy_step` at call time, so a test can swap it.

TensorFlow and Keras are imported inside the functions: the Keras 3 check
must run where TensorFlow is not installed.
"""

import importlib.metadata
import importlib.util

import numpy as np

NUM_CLASSES, DIM, BATCH, STEPS, ALPHA = 12, 6, 32, 10, 0.5
WEIGHT = 0.1  # lambda of the Keras 3 layer
TOLERANCE = 1e-5


def numpy_step(labels, features, centers, alpha):
    """The paper's loss and center update, in numpy."""
    loss = 0.5 * np.sum((features - centers[labels]) ** 2, axis=1)
    new = centers.copy()
    for j in np.unique(labels):
        members = features[labels == j]
        new[j] -= alpha * np.sum(centers[j] - members, axis=0) / (1 + len(members))
    return loss, new


def batch(rng):
    """Labels from all classes but the last two (absent), duplicates, and
    features near their class."""
    labels = rng.integers(0, NUM_CLASSES - 2, BATCH)
    return labels, (rng.normal(size=(BATCH, DIM)) + labels[:, None]).astype(np.float32)


def _eager_off():
    """Why TensorFlow's eager front-ends cannot run in this process, or None."""
    import tensorflow as tf
    if not tf.executing_eagerly():
        return "eager execution is disabled in this process"
    return None


def why_not_tf2():
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow not installed"
    return _eager_off()


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
    return _eager_off() if keras.backend.backend() == "tensorflow" else None


def _replay(centers, steps):
    """Centers after the numpy rule over `steps` ([(labels, features)])."""
    for labels, features in steps:
        centers = numpy_step(labels, features, centers, ALPHA)[1]
    return centers


def _max_error(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


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
    steps = [batch(rng) for _ in range(2)]
    x = np.concatenate([s[1] for s in steps])
    y = np.concatenate([s[0] for s in steps]).astype(np.int32)
    inputs = x if wrapped else [x, y]
    model.fit(inputs, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    centers = lambda: keras.ops.convert_to_numpy(layer.centers)  # noqa: E731
    expected = _replay(np.zeros((NUM_CLASSES, DIM)), steps * 2)
    error = _max_error(centers(), expected)
    labels, features = batch(rng)
    one = features if wrapped else [features, labels.astype(np.int32)]
    logits = model.predict_on_batch(one)
    logits = np.asarray(logits[0] if wrapped else logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    softmax = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(BATCH), labels]
    term = numpy_step(labels, features, expected, ALPHA)[0]
    want = np.mean(softmax) + WEIGHT * np.mean(term)
    got = float(model.train_on_batch(one, labels.astype(np.int32), return_dict=True)["loss"])
    expected = numpy_step(labels, features, expected, ALPHA)[1]
    error = max(error, _max_error(centers(), expected))
    before = centers()
    model.evaluate(inputs, y, batch_size=BATCH, verbose=0)
    model.predict(inputs, batch_size=BATCH, verbose=0)
    return error, abs(got - want) / (1 + abs(want)), _max_error(centers(), before)


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


def check_tf2(rng):
    """`(header, [(description, ok)])` for cl.tf2 in a tf.function."""
    import tensorflow as tf

    import cl.tf2
    center = cl.tf2.CenterLoss(NUM_CLASSES, DIM, alpha=ALPHA)

    @tf.function
    def step(labels, features, training):
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = center(labels, features, training=training)
        return loss, tape.gradient(tf.reduce_sum(loss), features)

    expected = np.zeros((NUM_CLASSES, DIM))
    errors = {"loss": 0.0, "gradient": 0.0, "centers": 0.0}
    for _ in range(STEPS):
        labels, features = batch(rng)
        loss, gradient = step(tf.constant(labels), tf.constant(features), tf.constant(True))
        want_loss, new = numpy_step(labels, features, expected, ALPHA)
        errors["loss"] = max(errors["loss"], np.max(np.abs(loss.numpy() - want_loss) / (1 + want_loss)))
        errors["gradient"] = max(errors["gradient"], _max_error(gradient, features - expected[labels]))
        expected = new
        errors["centers"] = max(errors["centers"], _max_error(center.centers, expected))
    labels, features = batch(rng)
    before = center.centers.numpy()
    step(tf.constant(labels), tf.constant(features), tf.constant(False))
    moved = _max_error(center.centers, before)
    checks = [(f"{what} vs numpy over {STEPS} steps (max err {error:.2e})", error < TOLERANCE)
              for what, error in errors.items()]
    checks += [(f"training=False moves nothing (moved {moved:.2e})", moved == 0),
               ("absent classes untouched", not np.any(center.centers.numpy()[-2:]))]
    return (f"tf2: cl.tf2.CenterLoss in a tf.function on TensorFlow {tf.__version__}, "
            f"num_classes={NUM_CLASSES}, dim={DIM}, batch={BATCH}, alpha={ALPHA}"), checks
