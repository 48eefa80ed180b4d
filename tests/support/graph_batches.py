"""Placeholders and batches for the tests of the TF1 graph API (`cl.ops`) and
its primitives: C = 9 classes, D = 4 features, batches of B = 24 with
duplicate labels from the first 7 classes only (the last 2 stay absent).
"""

import numpy as np
import tensorflow as tf

C, D, B = 9, 4, 24


def placeholders(dim=D, label_dtype=tf.int32):
    labels = tf.compat.v1.placeholder(label_dtype, [None], name="labels")
    features = tf.compat.v1.placeholder(tf.float32, [None, dim], name="features")
    return labels, features


def batch(rng, size=B, num_present=C - 2):
    """Labels with duplicates from the first classes only (the rest absent)."""
    labels = rng.integers(0, num_present, size)
    features = (rng.normal(size=(size, D)) + 3 * labels[:, None]).astype(np.float32)
    return labels, features
