"""The paper's setup: center loss on an embedding, softmax on logits after it.

A two-output model (embedding, logits). cl.CenterLoss goes on the embedding
output with lambda as its loss weight; both outputs take the same sparse
labels, so no dummy targets and no labels-as-inputs tricks. The centers
table is [NUM_CLASSES, EMBEDDING_DIM].
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

NUM_CLASSES = 10
EMBEDDING_DIM = 16
LAMBDA = 0.1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    x, y = load_digits(return_X_y=True)
    x = x.astype("float32") / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=0)

    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBEDDING_DIM, name="embedding")(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    model = keras.Model(inputs, [logits, embedding])

    center = cl.CenterLoss(num_classes=NUM_CLASSES, alpha=0.5)
    # compile_model = compile + initialise the new centers in Keras's session.
    cl.compile_model(
        model, keras.optimizers.legacy.Adam(learning_rate=1e-3),
        loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
        loss_weights={"logits": 1.0, "embedding": LAMBDA},
        # 'accuracy' would mean categorical accuracy here: name the sparse one.
        metrics={"logits": ["sparse_categorical_accuracy"],
                 "embedding": cl.center_metrics(center)})
    targets_train = {"logits": y_train, "embedding": y_train}
    targets_test = {"logits": y_test, "embedding": y_test}
    model.fit(x_train, targets_train, batch_size=64, epochs=args.epochs,
              validation_data=(x_test, targets_test), verbose=2)

    scores = dict(zip(model.metrics_names, model.evaluate(x_test, targets_test, verbose=0)))
    centers = keras.backend.get_value(center.centers)
    # center_ratio: mean distance to the own center / mean distance between centers.
    ratio = scores["embedding_center_ratio"]
    print(f"RESULT test_accuracy={scores['logits_sparse_categorical_accuracy']:.3f} "
          f"test_center_distance={scores['embedding_center_distance']:.3f} "
          f"test_center_ratio={ratio:.3f} centers_shape={centers.shape}")
    if not (np.abs(centers).max() > 0 and 0 < ratio < 0.5):
        sys.exit("FAILED: expected trained centers and test features closer to "
                 "their own center than half the distance between centers")


if __name__ == "__main__":
    main()
