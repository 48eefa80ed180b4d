"""A raw TF1 training loop: placeholders, a Session, cl.center_loss + cl.softmax_loss.

No Keras. Running the loss runs the center update, so the train op (which
depends on the loss) moves the centers too: no extra op to remember.
At the end every center should sit near the mean feature of its class.
"""

import argparse
import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import cl

# cl builds TF1 graph ops: switch eager execution off before building the graph.
tf.compat.v1.disable_eager_execution()

NUM_CLASSES = 10
FEATURE_DIM = 8
LAMBDA = 0.1
ALPHA = 0.5


def dense(inputs, units, name):
    """A plain `inputs @ w + b` with TF1 variables."""
    with tf.compat.v1.variable_scope(name):
        w = tf.compat.v1.get_variable(
            "w", [inputs.shape[1], units],
            initializer=tf.compat.v1.glorot_uniform_initializer())
        b = tf.compat.v1.get_variable("b", [units], initializer=tf.compat.v1.zeros_initializer())
        return tf.matmul(inputs, w) + b


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tf.compat.v1.set_random_seed(0)

    x_data, y_data = load_digits(return_X_y=True)
    x_data = x_data.astype(np.float32) / 16.0

    images = tf.compat.v1.placeholder(tf.float32, [None, 64], name="images")
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    hidden = tf.nn.relu(dense(images, 128, "hidden"))
    features = dense(hidden, FEATURE_DIM, "features")
    logits = dense(features, NUM_CLASSES, "logits")

    softmax_term = cl.softmax_loss(tf.one_hot(labels, NUM_CLASSES), logits)
    center_term = cl.center_loss(labels, features, alpha=ALPHA, num_classes=NUM_CLASSES)
    total_loss = tf.reduce_mean(softmax_term) + LAMBDA * tf.reduce_mean(center_term)
    train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(total_loss)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32))
    centers = cl.get_centers()  # center_loss/centers, [NUM_CLASSES, FEATURE_DIM]

    def distances(sess):
        """How far each center is from its class's mean feature, and how far
        apart the class means are (both averaged), on the whole data set."""
        all_features, learned = sess.run([features, centers], feed_dict={images: x_data})
        means = np.stack([all_features[y_data == j].mean(axis=0) for j in range(NUM_CLASSES)])
        center_to_mean = np.linalg.norm(learned[:, None] - means[None], axis=-1)
        gap = np.linalg.norm(means[:, None] - means[None], axis=-1).sum() / (
            NUM_CLASSES * (NUM_CLASSES - 1))
        own_nearest = bool(np.all(center_to_mean.argmin(axis=1) == np.arange(NUM_CLASSES)))
        return np.diag(center_to_mean).mean(), gap, own_nearest

    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for step in range(args.steps + 1):
            if step > 0:
                batch = rng.choice(len(x_data), 64, replace=False)
                sess.run(train_op, feed_dict={images: x_data[batch], labels: y_data[batch]})
            if step % 200 == 0 or step == args.steps:
                error, gap, _ = distances(sess)
                print(f"step {step}: center to class mean {error:.3f} "
                      f"(class means {gap:.3f} apart)")
        error, gap, own_class_nearest = distances(sess)
        train_accuracy = sess.run(accuracy, feed_dict={images: x_data, labels: y_data})

    print(f"RESULT train_accuracy={train_accuracy:.3f} center_to_class_mean={error:.3f} "
          f"class_mean_gap={gap:.3f} own_class_nearest={own_class_nearest}")
    if not (own_class_nearest and error < 0.25 * gap):
        sys.exit("FAILED: expected every center nearest its own class mean, "
                 "within a quarter of the mean gap between class means")


if __name__ == "__main__":
    main()
