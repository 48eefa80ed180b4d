"""TF2 custom training loops: a tf.Module owning the centers table.

    center = cl.tf2.CenterLoss(num_classes=10, dim=2, alpha=0.5)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits, embedding = model(x, training=True)
            loss = softmax(y, logits) + lam * tf.reduce_mean(center(y, embedding))
        ...

`center(labels, features, training=True)` returns the per-sample center
loss from the centers as they were before this step, and applies the
paper's update (see `cl.formulas`) when `training` is true. The table is an
ordinary `tf.Variable` made once in the constructor, so one trace of the
caller's tf.function serves every step, and `tf.train.Checkpoint` saves it.
"""

import tensorflow as tf

from cl import formulas


class CenterLoss(tf.Module):
    """Center loss `1/2 ||x_i - c_{y_i}||^2` with its table, for TF2 code.

    Args:
      num_classes: rows of the table.
      dim: feature dimension (columns).
      alpha: center learning rate in [0, 1] (paper: 0.5).
      name: module name; the variable is `<name>/centers`.

    `.centers` is a non-trainable float32 `tf.Variable` `[num_classes, dim]`,
    zeros at first. Assign trained centers with `.centers.assign(values)`
    (e.g. from `cl.read_centers`); a table of another shape is refused.
    """

    def __init__(self, num_classes, dim, alpha=0.5, name="center_loss"):
        super().__init__(name=name)
        self.num_classes = formulas.check_num_classes(num_classes)
        self.dim = formulas.check_num_classes(dim, "dim")
        self.alpha = formulas.check_alpha(alpha)
        with self.name_scope:
            self.centers = tf.Variable(tf.zeros([num_classes, dim], tf.float32),
                                       trainable=False, name="centers")

    def __call__(self, labels, features, training=True, sample_weight=None):
        """Per-sample loss `[batch]` (float32; float64 for float64 features).

        Args:
          labels: int `[batch]` class ids in `[0, num_classes)`; checked before
            any row is read or written (InvalidArgumentError otherwise).
          features: float `[batch, dim]`; gradients flow to them only.
          training: Python or tensor bool; the centers move only when true.
          sample_weight: float `[batch]` >= 0 for the update (weight 0 never
            moves a center), or None. NaN/Inf samples never move a center.
        """
        what = f"{self.name}"
        features = tf.convert_to_tensor(features)
        labels = tf.convert_to_tensor(labels)
        if not features.dtype.is_floating or features.shape.rank != 2:
            raise ValueError(f"{what}: features must be float [batch, dim]; received "
                             f"{features.dtype.name} of shape {features.shape}.")
        if features.shape[1] is not None and features.shape[1] != self.dim:
            raise ValueError(f"{what}: features must have dim={self.dim} columns; "
                             f"received shape {features.shape}.")
        if not labels.dtype.is_integer or labels.shape.rank != 1:
            raise ValueError(f"{what}: labels must be int class ids of shape [batch]; "
                             f"received {labels.dtype.name} of shape {labels.shape}.")
        compute_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
        features = tf.cast(features, compute_dtype)
        bad = tf.logical_or(labels < 0, labels >= self.num_classes)
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [f"{what}: labels must be class ids in [0, num_classes={self.num_classes});"
             " received out-of-range label(s):", tf.boolean_mask(labels, bad),
             "at batch position(s):", tf.where(bad)[:, 0]], summarize=20)
        with tf.control_dependencies([check]):
            labels = tf.identity(labels)
        # One sparse read serves the loss and the update: the loss sees the
        # pre-update centers, and the cost does not grow with num_classes.
        centers_batch = tf.cast(tf.stop_gradient(tf.gather(self.centers, labels)), compute_dtype)
        per_sample = formulas.per_sample_center_loss(features, centers_batch)

        def update():
            class_ids, deltas = formulas.center_update(
                labels, tf.stop_gradient(features), centers_batch, self.alpha, sample_weight)
            self.centers.scatter_sub(tf.IndexedSlices(tf.cast(deltas, tf.float32), class_ids))
            return tf.constant(True)

        if training is True:
            update()
        elif training is not False:
            tf.cond(tf.cast(training, tf.bool), update, lambda: tf.constant(False))
        return per_sample
