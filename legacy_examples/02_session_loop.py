"""The plainest TF1 training loop: tf.data with a fixed batch size, and
`sess.run(train_op)` alone.

No Keras, no feeds, no extra op to run: the train op computes the loss's
gradient, and cl ties the center update to that gradient, so the centers move
once per step even though TensorFlow never runs the loss op itself here (with
a fixed batch size the gradient of `reduce_mean` needs only the loss's shape).
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
    """A plain `inputs @ w + b` with TF1 variables (reused on a second call)."""
    with tf.compat.v1.variable_scope(name, reuse=tf.compat.v1.AUTO_REUSE):
        w = tf.compat.v1.get_variable(
            "w", [inputs.shape[1], units],
            initializer=tf.compat.v1.glorot_uniform_initializer())
        b = tf.compat.v1.get_variable("b", [units], initializer=tf.compat.v1.zeros_initializer())
        return tf.matmul(inputs, w) + b


def network(images):
    """images [batch, 64] -> (features [batch, FEATURE_DIM], logits [batch, 10])."""
    hidden = tf.nn.relu(dense(images, 128, "hidden"))
    features = dense(hidden, FEATURE_DIM, "features")
    return features, dense(features, NUM_CLASSES, "logits")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    tf.compat.v1.set_random_seed(0)

    x_data, y_data = load_digits(return_X_y=True)
    x_data = x_data.astype(np.float32) / 16.0

    # Training input: shuffled batches of exactly 64 (a static batch size).
    dataset = (tf.data.Dataset.from_tensor_slices((x_data, y_data)).repeat()
               .shuffle(len(x_data), seed=0).batch(64, drop_remainder=True))
    images, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    features, logits = network(images)

    softmax_term = cl.softmax_loss(tf.one_hot(labels, NUM_CLASSES), logits)
    center_term = cl.center_loss(labels, features, alpha=ALPHA, num_classes=NUM_CLASSES)
    total_loss = tf.reduce_mean(softmax_term) + LAMBDA * tf.reduce_mean(center_term)
    train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(total_loss)
    centers = cl.get_centers()  # center_loss/centers, [NUM_CLASSES, FEATURE_DIM]

    # Evaluation on the whole data set: the same weights, no center loss.
    all_images = tf.compat.v1.placeholder(tf.float32, [None, 64], name="all_images")
    all_features, all_logits = network(all_images)

    def distances(sess):
        """How far each center is from its class's mean feature, and how far
        apart the class means are (both averaged), on the whole data set."""
        values, learned = sess.run([all_features, centers], feed_dict={all_images: x_data})
        means = np.stack([values[y_data == j].mean(axis=0) for j in range(NUM_CLASSES)])
        center_to_mean = np.linalg.norm(learned[:, None] - means[None], axis=-1)
        gap = np.linalg.norm(means[:, None] - means[None], axis=-1).sum() / (
            NUM_CLASSES * (NUM_CLASSES - 1))
        own_nearest = bool(np.all(center_to_mean.argmin(axis=1) == np.arange(NUM_CLASSES)))
        return np.diag(center_to_mean).mean(), gap, own_nearest

    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for step in range(args.steps + 1):
            if step > 0:
                sess.run(train_op)  # the train op alone: it also moves the centers
            if step % 200 == 0 or step == args.steps:
                error, gap, _ = distances(sess)
                print(f"step {step}: center to class mean {error:.3f} "
                      f"(class means {gap:.3f} apart)")
        error, gap, own_class_nearest = distances(sess)
        predicted = sess.run(tf.argmax(all_logits, 1), feed_dict={all_images: x_data})
        train_accuracy = float(np.mean(predicted == y_data))

    print(f"RESULT train_accuracy={train_accuracy:.3f} center_to_class_mean={error:.3f} "
          f"class_mean_gap={gap:.3f} own_class_nearest={own_class_nearest}")
    if not (own_class_nearest and error < 0.25 * gap):
        sys.exit("FAILED: expected every center nearest its own class mean, "
                 "within a quarter of the mean gap between class means")


if __name__ == "__main__":
    main()
