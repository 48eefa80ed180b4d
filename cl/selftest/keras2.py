"""The blog's Keras 2 route: `model.compile(loss=cl.loss)` on a model whose
last layer gives the logits, then `fit` (learning rate 0, so the logits stay
fixed and the rule can be replayed in numpy), `train_on_batch` and
`evaluate`. Keras 2 needs graph mode; it runs inside its own
`tf.Graph().as_default()` (Keras 2 then uses that graph and a session of its
own), so eager execution stays on. Skipped, with the reason, where Keras 2
cannot be imported (TensorFlow >= 2.16 without tf_keras)."""

import importlib.metadata
import warnings

import numpy as np

import cl
from cl.selftest import graph, reference
from cl.selftest.reference import ALPHA, BATCH, DIM, NUM_CLASSES, TOLERANCE


def why_not_keras2():
    reason = graph.why_not_graph()
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
    center, new = reference.numpy_step(labels, logits, centers, ALPHA)
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
