"""`python -m cl`: the self-test of every front-end this environment runs.

graph: builds the op in a TF1 graph on random data (duplicate labels, absent
classes, batch size unknown at build time), runs it in a
tf.compat.v1.Session for several steps and compares the loss, its gradient
and the centers with a numpy version of the paper's formulas. Then the
plainest training loop: a fixed batch size and `sess.run(train_op)` alone
must move the centers exactly once per run. The graphs live in their own
`tf.Graph` contexts, so eager execution stays on for what follows.

keras2: the blog's route, `model.compile(loss=cl.loss)` on a Keras 2 model
whose last layer gives the logits, then `fit` (learning rate 0, so the
logits stay fixed and the rule can be replayed in numpy), `train_on_batch`
and `evaluate`. Keras 2 needs graph mode; it runs inside its own
`tf.Graph().as_default()` (Keras 2 then uses that graph and a session of
its own), so eager execution stays on here too. Skipped, with the reason,
where Keras 2 cannot be imported (TensorFlow >= 2.16 without tf_keras).

keras3 (on the installed Keras 3 backend) and tf2: see `cl.selftest`.

A front-end the environment cannot run is skipped, with the reason. Prints a
short report; exits non-zero on any failure, or when nothing was checked.
"""

import importlib.metadata
import importlib.util
import sys
import warnings

import numpy as np

import cl
from cl import selftest
from cl.selftest import ALPHA, BATCH, DIM, NUM_CLASSES, STEPS, TOLERANCE


def numpy_step(labels, features, centers, alpha):
    """The paper's loss and center update, in numpy (`cl.selftest`'s, read
    at call time)."""
    return selftest.numpy_step(labels, features, centers, alpha)


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
            expected = numpy_step(feed[labels], batch_features, expected, ALPHA)[1]
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
            want_loss, new_expected = numpy_step(batch_labels, batch_features, expected, ALPHA)
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


def why_not_graph():
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow not installed"
    return None


def why_not_keras2():
    reason = why_not_graph()
    if reason is not None:
        return reason
    from cl import compat
    try:
        compat.keras_module()
    except ImportError as error:
        return f"Keras 2 not installed: {error}"
    return None


def _blog_loss_and_update(labels, logits, centers):
    """The blog's `cl.loss` per sample (softmax cross-entropy on the logits
    + LAMBDA * center loss, centers from before the step) and the centers
    after the step, in numpy."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    softmax = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]
    center, new = numpy_step(labels, logits, centers, ALPHA)
    return softmax + cl.LAMBDA * center, new


def check_keras2(rng):
    """`(header, [(description, ok)])` for the blog's Keras 2 route."""
    import tensorflow as tf

    from cl import compat
    keras = compat.keras_module()
    saved = cl.NUM_CLASSES, cl.ALPHA
    try:
        cl.NUM_CLASSES, cl.ALPHA = NUM_CLASSES, ALPHA
        with tf.Graph().as_default(), warnings.catch_warnings():
            # Keras 2's own deprecation notice, printed on every fit.
            warnings.filterwarnings("ignore", message="`Model.state_updates`")
            inputs = keras.Input((DIM,))
            model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(inputs))
            model.compile(optimizer=keras.optimizers.legacy.SGD(0.0), loss=cl.loss,
                          metrics=[cl.categorical_accuracy])
            session = compat.keras_backend(model).get_session()
            session.run(tf.compat.v1.global_variables_initializer())  # the blog's step
            (table,) = cl.centers_of(model)
            steps = [rng.integers(0, NUM_CLASSES - 2, BATCH) for _ in range(2)]
            labels = np.concatenate(steps)
            x = rng.normal(size=(len(labels), DIM)).astype(np.float32)
            logits = model.predict(x, batch_size=BATCH, verbose=0).astype(np.float64)
            onehot = np.eye(NUM_CLASSES, dtype=np.float32)
            model.fit(x, onehot[labels], batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
            expected = np.zeros((NUM_CLASSES, NUM_CLASSES))  # the blog's [C, C]: on the logits
            for rows in [slice(0, BATCH), slice(BATCH, 2 * BATCH)] * 2:  # 2 epochs, 2 batches
                expected = _blog_loss_and_update(labels[rows], logits[rows], expected)[1]
            error = float(np.max(np.abs(session.run(table) - expected)))
            want, expected = _blog_loss_and_update(labels[:BATCH], logits[:BATCH], expected)
            got = model.train_on_batch(x[:BATCH], onehot[labels[:BATCH]])[0]
            error = max(error, float(np.max(np.abs(session.run(table) - expected))))
            loss_error = abs(got - np.mean(want)) / (1 + abs(np.mean(want)))
            before = session.run(table)
            model.evaluate(x, onehot[labels], batch_size=BATCH, verbose=0)
            model.predict(x, batch_size=BATCH, verbose=0)
            moved = float(np.max(np.abs(session.run(table) - before)))
    finally:
        cl.NUM_CLASSES, cl.ALPHA = saved
    checks = [
        (f"model.compile(loss=cl.loss), fit (4 steps) and train_on_batch: centers vs numpy "
         f"(max err {error:.2e})", bool(np.any(expected)) and error < TOLERANCE),
        (f"train_on_batch loss = cross-entropy + LAMBDA * center loss "
         f"(rel err {loss_error:.2e})", loss_error < TOLERANCE),
        (f"evaluate and predict move nothing (moved {moved:.2e})", moved == 0),
    ]
    # TF 2.15's tf.keras has no __version__: it is the `keras` 2.15 package.
    which = (f"tf_keras {keras.__version__}" if keras.__name__ == "tf_keras"
             else f"tf.keras (Keras {importlib.metadata.version('keras')})")
    header = (f"keras2: the blog's model.compile(loss=cl.loss) on {which}, "
              f"num_classes={NUM_CLASSES}, alpha={ALPHA}, LAMBDA={cl.LAMBDA}, batch={BATCH}")
    return header, checks


# In this order: the graph and Keras 2 checks keep to their own tf.Graph
# contexts, so the eager ones after them run in the same process.
FRONT_ENDS = (("graph", why_not_graph, check_graph),
              ("keras2", why_not_keras2, check_keras2),
              ("keras3", selftest.why_not_keras3, selftest.check_keras3),
              ("tf2", selftest.why_not_tf2, selftest.check_tf2))


def run_front_end(name, why_not, check, rng):
    """`(status, passed)`, printing the front-end's checks; passed is None
    when it was skipped."""
    reason = why_not()
    if reason is not None:
        return f"skipped ({reason})", None
    try:
        header, checks = check(rng)
    except Exception as error:  # a crash is a failed check, reported as one
        header, checks = f"{name}:", [(f"raised {type(error).__name__}: {error}", False)]
    print(header)
    for description, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {description}")
    passed = all(ok for _, ok in checks)
    failed = sum(not ok for _, ok in checks)
    return ("checked, all passed" if passed else f"checked, {failed} FAILED"), passed


def main(front_ends=FRONT_ENDS):
    rng = np.random.default_rng(2016)
    print(f"cl {cl.__version__} self-test (Python {sys.version.split()[0]})")
    results = []
    for name, why_not, check in front_ends:
        status, passed = run_front_end(name, why_not, check, rng)
        results.append((name, status, passed))
    print("front-ends:")
    for name, status, _ in results:
        print(f"  {name}: {status}")
    checked = [passed for _, _, passed in results if passed is not None]
    if not checked:
        print("  nothing could be checked here: install TensorFlow, or Keras 3 "
              "with a backend cl.keras3 supports (KERAS_BACKEND)")
    passed = bool(checked) and all(checked)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
