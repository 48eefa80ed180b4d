"""The blog's usage: set cl's constants, compile a logits model with cl.loss, fit.

Center loss here sits on the logits (the blog's choice): the centers table
is [NUM_CLASSES, NUM_CLASSES]. Labels are one-hot. Compiling creates and
initialises the centers in Keras's session; evaluate and validation_data
read them but never move them.
"""

import argparse
import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cl

try:
    import tf_keras as keras  # Keras 2 on TensorFlow >= 2.16
except ImportError:
    from tensorflow import keras  # TensorFlow <= 2.15: tf.keras is Keras 2
# cl builds TF1 graph ops: switch eager execution off before any model exists.
tf.compat.v1.disable_eager_execution()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    x, y = load_digits(return_X_y=True)
    x = x.astype("float32") / 16.0
    onehot = keras.utils.to_categorical(y, 10)
    x_train, x_test, y_train, y_test = train_test_split(
        x, onehot, test_size=0.3, stratify=y, random_state=0)

    cl.NUM_CLASSES = 10
    cl.ALPHA = 0.5    # center learning rate, as in the paper
    cl.LAMBDA = 0.01  # weight of the center term in cl.loss

    model = keras.Sequential([
        keras.layers.Dense(128, activation="relu", input_shape=(64,)),
        keras.layers.Dense(10),  # logits: cl.loss applies the softmax itself
    ])
    # New-style Keras optimizers do not run in graph mode: use the legacy ones
    # (or the string "adam").
    model.compile(optimizer=keras.optimizers.legacy.Adam(learning_rate=1e-3),
                  loss=cl.loss, metrics=[cl.categorical_accuracy])
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs,
              validation_data=(x_test, y_test), verbose=2)

    centers = cl.get_centers()  # the variable center_loss/centers
    trained_centers = keras.backend.get_value(centers)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    unchanged_by_evaluate = np.array_equal(keras.backend.get_value(centers), trained_centers)

    centers_moved = bool(np.abs(trained_centers).max() > 0)  # they start at zero
    print(f"RESULT test_accuracy={test_accuracy:.3f} test_loss={test_loss:.3f} "
          f"centers_moved={centers_moved} unchanged_by_evaluate={unchanged_by_evaluate}")
    if not (centers_moved and unchanged_by_evaluate and test_accuracy > 0.5):
        sys.exit("FAILED: expected the centers to move in training, stay put in "
                 "evaluate, and a test accuracy above 0.5")


if __name__ == "__main__":
    main()
