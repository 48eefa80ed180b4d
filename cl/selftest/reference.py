"""What every self-test checks against: the paper's rule in numpy, the
sizes, and the helpers the front-ends' checks share. The checks read the
rule as `reference.numpy_step` at call time, so a test can swap it."""

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


def replay(centers, steps):
    """Centers after the numpy rule over `steps` ([(labels, features)])."""
    for labels, features in steps:
        centers = numpy_step(labels, features, centers, ALPHA)[1]
    return centers


def max_error(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


def eager_off():
    """Why TensorFlow's eager front-ends cannot run in this process, or None."""
    import tensorflow as tf
    if not tf.executing_eagerly():
        return "eager execution is disabled in this process"
    return None
