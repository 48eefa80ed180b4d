"""The TF1 graph API in a Session: the op on random data (duplicate labels,
absent classes, batch size unknown at build time) for several steps, loss,
gradient and centers against the numpy rule; then the plainest training
loop: a fixed batch size and `sess.run(train_op)` alone must move the
centers exactly once per run. Each graph lives in its own `tf.Graph`, so
eager execution stays on for the checks that follow."""

import importlib.util

import numpy as np

import cl
from cl.selftest import reference
from cl.selftest.reference import ALPHA, BATCH, DIM, NUM_CLASSES, STEPS, TOLERANCE


def why_not_graph():
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow not installed"
    return None


def train_op_alone(rng):
    """Max deviation from numpy of the centers after `sess.run(train_op)`
    alone, batch size fixed at build time, learning rate 0."""
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [BATCH, DIM], name="images")
        labels = tf.compat.v1.placeholder(tf.int64, [BATCH], name="labels")
        weights = tf.compat.v1.get_variable("w", initializer=rng.normal(size=(DIM, DIM)).astype(np.float32))
        features = tf.matmul(images, weights)
        loss = tf.reduce_mean(cl.center_loss(labels, features, alpha=ALPHA, num_classes=NUM_CLASSES))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)
        centers = cl.get_centers()
        init = tf.compat.v1.global_variables_initializer()
    expected = np.zeros((NUM_CLASSES, DIM), np.float32)
    error = 0.0
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(init)
        for _ in range(STEPS):
            feed = {images: rng.normal(size=(BATCH, DIM)).astype(np.float32),
                    labels: rng.integers(0, NUM_CLASSES, BATCH)}
            batch_features = session.run(features, feed)  # no loss in this run: no update
            session.run(train_op, feed)
            expected = reference.numpy_step(feed[labels], batch_features, expected, ALPHA)[1]
            error = max(error, np.max(np.abs(session.run(centers) - expected)))
    return error, bool(np.any(expected))


def check_graph(rng):
    """`(header, [(description, ok)])` for the TF1 graph API in a Session."""
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        features = tf.compat.v1.placeholder(tf.float32, [None, DIM], name="features")
        loss = cl.center_loss(labels, features, alpha=ALPHA, num_classes=NUM_CLASSES)
        gradient = tf.gradients(tf.reduce_sum(loss), features)[0]
        centers = cl.get_centers()
        init = tf.compat.v1.global_variables_initializer()

    expected = np.zeros((NUM_CLASSES, DIM), np.float32)
    errors = {"loss": 0.0, "gradient": 0.0, "centers": 0.0}
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(init)
        for _ in range(STEPS):
            # Classes 0..NUM_CLASSES-3 only: the last two stay absent.
            batch_labels = rng.integers(0, NUM_CLASSES - 2, BATCH)
            batch_features = (rng.normal(size=(BATCH, DIM)) + batch_labels[:, None]).astype(np.float32)
            got_loss, got_gradient = session.run(
                [loss, gradient], {labels: batch_labels, features: batch_features})
            want_loss, new_expected = reference.numpy_step(batch_labels, batch_features, expected, ALPHA)
            errors["loss"] = max(errors["loss"], np.max(np.abs(got_loss - want_loss) / (1 + want_loss)))
            errors["gradient"] = max(errors["gradient"], np.max(np.abs(
                got_gradient - (batch_features - expected[batch_labels]))))
            expected = new_expected
            errors["centers"] = max(errors["centers"], np.max(np.abs(session.run(centers) - expected)))
        final = session.run(centers)

    kind = "ref" if centers.dtype._is_ref_dtype else "resource"
    checks = [
        ("loss shape is [batch]", got_loss.shape == (BATCH,)),
        ("centers variable", centers.name == "center_loss/centers:0"
         and tuple(centers.shape.as_list()) == (NUM_CLASSES, DIM)
         and centers not in graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)),
        (f"loss vs numpy (max rel err {errors['loss']:.2e})", errors["loss"] < TOLERANCE),
        (f"gradient vs numpy (max err {errors['gradient']:.2e})", errors["gradient"] < TOLERANCE),
        (f"centers vs numpy over {STEPS} steps (max err {errors['centers']:.2e})",
         errors["centers"] < TOLERANCE),
        ("absent classes untouched", not np.any(final[-2:])),
    ]
    train_error, moved = train_op_alone(rng)
    checks.append((f"sess.run(train_op) alone, batch fixed at {BATCH}: one update per run "
                   f"over {STEPS} steps (max err {train_error:.2e})",
                   moved and train_error < TOLERANCE))
    header = (f"graph: center_loss on TensorFlow {tf.__version__}, "
              f"num_classes={NUM_CLASSES}, dim={DIM}, batch={BATCH}, alpha={ALPHA}, {STEPS} steps, "
              f"centers: {kind} variable")
    return header, checks
