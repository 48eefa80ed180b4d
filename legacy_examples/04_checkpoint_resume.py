"""Train, checkpoint, rebuild in a fresh graph, restore, resume.

The centers are not Keras weights (they are not trainable and get no
gradient), yet they must survive a restart. cl attaches them to the model's
checkpoint: TF-format `save_weights`/`load_weights` (and ModelCheckpoint)
carry them, and so does a plain tf.compat.v1.train.Saver. Restore after
compiling: compiling is what creates the centers variable.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import cl

try:
    import tf_keras as keras  # Keras 2 on TensorFlow >= 2.16
except ImportError:
    from tensorflow import keras  # TensorFlow <= 2.15: tf.keras is Keras 2
# cl builds TF1 graph ops: switch eager execution off before any model exists.
tf.compat.v1.disable_eager_execution()

NUM_CLASSES = 10


def build_model():
    """A fresh graph with the compiled two-output model and its center loss."""
    keras.backend.clear_session()
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(16, name="embedding")(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    model = keras.Model(inputs, [logits, embedding])
    center = cl.CenterLoss(num_classes=NUM_CLASSES, alpha=0.5)
    cl.compile_model(model, keras.optimizers.legacy.Adam(learning_rate=1e-3),
                     loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                     loss_weights={"logits": 1.0, "embedding": 0.1})
    return model, center


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs before the checkpoint, and again after resuming")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x, y = load_digits(return_X_y=True)
    x = x.astype("float32") / 16.0
    targets = {"logits": y, "embedding": y}

    with tempfile.TemporaryDirectory() as folder:
        weights_path = os.path.join(folder, "weights")  # no .h5: TensorFlow format
        saver_path = os.path.join(folder, "saver.ckpt")

        model, center = build_model()
        first_run = model.fit(x, targets, batch_size=64, epochs=args.epochs, verbose=2)
        saved = keras.backend.get_value(center.centers)
        model.save_weights(weights_path)
        # The TF1 way: a Saver over every global variable, in Keras's session.
        tf.compat.v1.train.Saver().save(cl.compat.keras_backend(model).get_session(),
                                        saver_path)

        # Restore route 1: a Saver, into a rebuilt model in a new graph.
        model, center = build_model()
        tf.compat.v1.train.Saver().restore(cl.compat.keras_backend(model).get_session(),
                                           saver_path)
        equal_after_saver = np.array_equal(keras.backend.get_value(center.centers), saved)

        # Restore route 2: Keras load_weights, into another rebuilt model.
        model, center = build_model()
        model.load_weights(weights_path)
        equal_after_load_weights = np.array_equal(
            keras.backend.get_value(center.centers), saved)

        # Inside the folder's lifetime: the optimizer's slots, made by fit,
        # are restored from the checkpoint only now.
        print("resuming training from the restored checkpoint")
        resumed = model.fit(x, targets, batch_size=64, epochs=args.epochs, verbose=2)
    # A true resume starts where the first run got to, not from scratch.
    continued = resumed.history["loss"][0] < first_run.history["loss"][0]
    moved_after_resume = not np.array_equal(keras.backend.get_value(center.centers), saved)

    print(f"RESULT centers_equal_after_load_weights={equal_after_load_weights} "
          f"centers_equal_after_saver={equal_after_saver} "
          f"centers_moved_after_resume={moved_after_resume} "
          f"loss_continued={continued}")
    if not (equal_after_load_weights and equal_after_saver and moved_after_resume
            and continued):
        sys.exit("FAILED: expected both restores to bring back the saved centers "
                 "exactly, and resumed training to continue from them")


if __name__ == "__main__":
    main()
