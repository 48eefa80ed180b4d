"""Keras 2 fit under MultiWorkerMirroredStrategy, one worker of 2, graph
mode: every worker passes the same numpy data (Keras's contract) and takes
its slice of each global batch, so the global batch of step s is rows
[s*B, (s+1)*B) of x. Both workers' tables end bitwise equal, by the rule on
those global batches; a class that never appears keeps a zero center.

Run by tests/graph_mode/test_replicas.py as 2 processes on 127.0.0.1; argv:
task index, comma-separated ports, the tests/support folder. Prints one RESULT line.
"""

import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, sys.argv[3])  # tests/support: the numpy reference, the script helpers
from multi_worker import join_cluster  # noqa: E402

join_cluster(sys.argv)  # TF_CONFIG: before TensorFlow starts

import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()
import reference  # noqa: E402

import cl  # noqa: E402
from cl import compat  # noqa: E402

keras, K = compat.keras_module(), compat.keras_backend()

C, D, N, B, EPOCHS = 6, 3, 32, 8, 2


def main():
    strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
    kernel = np.random.default_rng(7).normal(size=(4, D)).astype("float32")
    with strategy.scope():
        inputs = keras.Input((4,))
        embedding = keras.layers.Dense(D, name="embedding", trainable=False, use_bias=False,
                                       kernel_initializer=keras.initializers.Constant(kernel))(inputs)
        logits = keras.layers.Dense(C, name="logits", trainable=False)(embedding)
        model = keras.Model(inputs, [logits, embedding])
        cl.compile_model(model, keras.optimizers.legacy.SGD(0.0),
                         loss={"logits": cl.SparseSoftmaxLoss(),
                               "embedding": cl.CenterLoss(num_classes=C, alpha=0.5)},
                         loss_weights={"logits": 1.0, "embedding": 0.1})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype("float32")
    y = rng.integers(0, C - 1, N)  # class C-1 never appears
    model.fit(x, {"logits": y, "embedding": y}, batch_size=B, epochs=EPOCHS, shuffle=False, verbose=0)
    table = strategy.experimental_local_results(cl.centers_of(model)[0])[0]
    centers = K.get_session().run(table)
    features, expected = x @ kernel, np.zeros((C, D))
    for _ in range(EPOCHS):
        for start in range(0, N, B):
            part = slice(start, start + B)
            expected = reference.update_centers(y[part], features[part], expected, 0.5)
    return dict(
        replicas=strategy.num_replicas_in_sync, hash=hashlib.sha256(centers.tobytes()).hexdigest(),
        center_dev=float(np.abs(centers - expected).max()), moved=float(np.abs(expected).max()),
        absent_zero=bool(not centers[C - 1].any()))


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
    os._exit(0)  # see tests/scripts/keras2_mirrored_fit.py: never close the session
