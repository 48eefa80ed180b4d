"""`cl.tf2` in a `tf.function` step: loss, gradient and centers against the
numpy rule, and `training=False` moving nothing."""

import importlib.util

import numpy as np

from cl.selftest import reference
from cl.selftest.reference import ALPHA, BATCH, DIM, NUM_CLASSES, STEPS, TOLERANCE


def why_not_tf2():
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow not installed"
    return reference.eager_off()


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
        labels, features = reference.batch(rng)
        loss, gradient = step(tf.constant(labels), tf.constant(features), tf.constant(True))
        want_loss, new = reference.numpy_step(labels, features, expected, ALPHA)
        errors["loss"] = max(errors["loss"], np.max(np.abs(loss.numpy() - want_loss) / (1 + want_loss)))
        errors["gradient"] = max(errors["gradient"],
                                 reference.max_error(gradient, features - expected[labels]))
        expected = new
        errors["centers"] = max(errors["centers"], reference.max_error(center.centers, expected))
    labels, features = reference.batch(rng)
    before = center.centers.numpy()
    step(tf.constant(labels), tf.constant(features), tf.constant(False))
    moved = reference.max_error(center.centers, before)
    checks = [(f"{what} vs numpy over {STEPS} steps (max err {error:.2e})", error < TOLERANCE)
              for what, error in errors.items()]
    checks += [(f"training=False moves nothing (moved {moved:.2e})", moved == 0),
               ("absent classes untouched", not np.any(center.centers.numpy()[-2:]))]
    return (f"tf2: cl.tf2.CenterLoss in a tf.function on TensorFlow {tf.__version__}, "
            f"num_classes={NUM_CLASSES}, dim={DIM}, batch={BATCH}, alpha={ALPHA}"), checks
