"""The paper's formulas, as pure tensor functions.

Wen et al., "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016:

    L_C = 1/2 * sum_i ||x_i - c_{y_i}||^2           (eq. 2, here per sample)
    dL_C/dx_i = x_i - c_{y_i}                        (centers get no gradient)
    delta_c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)      (eq. 4)
    c_j <- c_j - alpha * delta_c_j      for each class j in the mini-batch

With per-sample weights w_i >= 0 (Keras sample_weight / class_weight) the
update is the weighted form, which is eq. 4 for w = 1:

    delta_c_j = sum_{i: y_i = j} w_i (c_j - x_i) / (1 + sum_{i: y_i = j} w_i)

so a sample of weight 0 neither moves its center nor counts in n_j.

No variables, sessions or Keras here: `cl.ops` owns the centers variable and
applies the update; these functions only compute.
"""

import tensorflow as tf


def per_sample_center_loss(features, centers_batch):
    """Returns `1/2 * ||x_i - c_{y_i}||^2` for each sample.

    Args:
      features: float `[batch, dim]`, the x_i.
      centers_batch: float `[batch, dim]`, row i holding c_{y_i}; same dtype.

    Returns:
      `[batch]`, same dtype as `features`.
    """
    return 0.5 * tf.reduce_sum(tf.square(features - centers_batch), axis=1)


def center_update(labels, features, centers_batch, alpha, weights=None):
    """The paper's center update, summed per class present in the batch.

    Args:
      labels: int `[batch]`, class ids.
      features: float `[batch, dim]`.
      centers_batch: float `[batch, dim]`, row i holding c_{y_i}, read before
        the update (every sample of class j must see the same c_j).
      alpha: float in [0, 1], the center learning rate.
      weights: float `[batch]` >= 0, or None for all ones. A sample of weight
        0, or whose features are not all finite (NaN/Inf), neither moves its
        center nor counts in n_j.

    Returns:
      `(class_ids, deltas)`: int `[k]` unique classes of the batch and float
      `[k, dim]` with `alpha * sum_{i: y_i = j} w_i (c_j - x_i) /
      (1 + sum_{i: y_i = j} w_i)`, so that `centers[class_ids] -= deltas` is
      the paper's update. The class ids are unique, so the scatter has no
      duplicate indices to race on. A class whose samples all have weight 0
      gets a delta of exactly 0.
    """
    dtype = features.dtype
    if weights is None:
        weights = tf.ones_like(labels, dtype=dtype)
    weights = tf.cast(weights, dtype)
    finite = tf.reduce_all(tf.math.is_finite(features), axis=1)
    included = tf.logical_and(finite, weights > 0)
    # tf.where, not a multiply by 0: 0 * NaN is still NaN.
    weights = tf.where(included, weights, tf.zeros_like(weights))
    differences = tf.where(
        tf.broadcast_to(included[:, None], tf.shape(features)),
        (centers_batch - features) * weights[:, None], tf.zeros_like(features))
    class_ids, sample_to_class = tf.unique(labels)
    num_present = tf.size(class_ids)
    sums = tf.math.unsorted_segment_sum(differences, sample_to_class, num_present)
    counts = tf.math.unsorted_segment_sum(weights, sample_to_class, num_present)
    deltas = alpha * sums / (1.0 + counts)[:, None]
    return class_ids, deltas
