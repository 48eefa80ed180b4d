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

Under `tf.distribute.MirroredStrategy` or `MultiWorkerMirroredStrategy`,
construct it in `strategy.scope()` and call it in `strategy.run`: the table
is then mirrored, and every copy follows the rule on the global batch
(`cl.graph.replicas`, shared with the graph API). Under
`tf.distribute.ParameterServerStrategy` with a `variable_partitioner`, the
table is a ShardedVariable split by rows over the ps tasks, and each step
scheduled by `ClusterCoordinator` reads and updates only its batch's rows,
each on its own shard (`cl.graph.shards`).

Bad inputs (labels out of range, labels and features of different batch
sizes, negative or NaN sample weights) raise before any row is read or
written. Under XLA (`jit_compile=True`), which drops run-time asserts, such
a sample's loss reads NaN and it is left out of the update instead.
"""

import tensorflow as tf

from cl import formulas
from cl.graph import checks, replicas, shards

_ALTERNATIVE = "or cl.tf2.CenterLoss without a strategy"
_CREATE_HINT = " (construct the cl.tf2.CenterLoss there)"


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
    Constructed in the scope of a MirroredStrategy or
    MultiWorkerMirroredStrategy, the table is mirrored (ONLY_FIRST_REPLICA:
    `assign` and restore keep the copies equal) and every call inside
    `strategy.run` updates all copies from the global batch. Under
    ParameterServerStrategy it is a ShardedVariable (rows split over the ps
    tasks by the strategy's `variable_partitioner`; one variable on a ps
    without one) and each scheduled step follows the rule on its own batch;
    a partitioner that does not split rows only is refused (ValueError).
    Other strategies but OneDeviceStrategy are refused (NotImplementedError).
    """

    def __init__(self, num_classes, dim, alpha=0.5, name="center_loss"):
        super().__init__(name=name)
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        parameter_server = shards.is_parameter_server(strategy)
        if strategy is not None and not parameter_server:
            replicas.check_strategy(strategy, f"cl.tf2.CenterLoss '{name}'", _ALTERNATIVE)
        self.num_classes = formulas.check_num_classes(num_classes)
        self.dim = formulas.check_num_classes(dim, "dim")
        self.alpha = formulas.check_alpha(alpha)
        if parameter_server:
            shards.check_parameter_server(strategy, num_classes, dim,
                                              f"cl.tf2.CenterLoss '{name}'")
        with self.name_scope:
            self.centers = tf.Variable(tf.zeros([num_classes, dim], tf.float32),
                                       trainable=False, name="centers",
                                       **replicas.table_options())

    def load(self, centers):
        """Sets the whole table to `centers` (e.g. from `cl.read_centers`),
        refusing another shape or a non-finite value before any change (a
        ShardedVariable's own `assign` takes a wrong shape by slicing it)."""
        centers = tf.convert_to_tensor(centers, tf.float32)
        expected = [self.num_classes, self.dim]
        if centers.shape.as_list() != expected:
            raise ValueError(f"cl.tf2.CenterLoss '{self.name}': centers must have shape "
                             f"{expected}; received {centers.shape.as_list()}.")
        tf.debugging.assert_all_finite(
            centers, f"cl.tf2.CenterLoss '{self.name}': the centers to load are not all finite")
        self.centers.assign(centers)

    def __call__(self, labels, features, training=True, sample_weight=None):
        """Per-sample loss `[batch]` (float32; float64 for float64 features).

        Args:
          labels: integer `[batch]` class ids in `[0, num_classes)` (float
            labels are refused: TypeError).
          features: float `[batch, dim]`; gradients flow to them only.
          training: Python or tensor bool; the centers move only when true.
          sample_weight: `[batch]` (or `[batch, 1]`) finite weights >= 0 for
            the update (weight 0 never moves a center; the loss is not
            weighted), or None. NaN/Inf samples never move a center.

        Raises:
          TypeError / ValueError for dtypes and shapes known when called.
          InvalidArgumentError before any row is read or written, for labels
          out of range, batch sizes that differ, or weights that are
          negative, NaN or Inf. Under XLA those samples' losses are NaN and
          they are left out of the update instead.
        """
        what = f"{self.name}"
        features = tf.convert_to_tensor(features)
        checks.check_features(features, what, self.dim)
        labels = checks.check_labels(tf.convert_to_tensor(labels), features, what)
        distributed = replicas.is_distributed(
            self.centers, training, f"cl.tf2.CenterLoss '{what}'", _ALTERNATIVE, _CREATE_HINT)
        compute_dtype = checks.compute_dtype(features.dtype)
        features = tf.cast(features, compute_dtype)
        valid, assertions = checks.label_checks(labels, features, self.num_classes, what)
        weights, valid_weights, weight_assertions = checks.checked_sample_weight(
            sample_weight, labels, compute_dtype, what)
        if weights is not None:
            valid = tf.logical_and(valid, valid_weights)
        with tf.control_dependencies(assertions + weight_assertions):
            labels = tf.identity(labels)
        # Where the checks cannot raise (XLA), a bad sample reads row 0 and has
        # weight 0, so it never moves a center; its loss reads NaN below.
        labels = tf.where(valid, labels, tf.zeros_like(labels))
        update_weights = tf.cast(valid, compute_dtype) if weights is None else \
            tf.where(valid, weights, tf.zeros_like(weights))
        nan = tf.constant(float("nan"), compute_dtype)
        if distributed:
            # Every replica's update waits for the global batch's deltas, which
            # wait for every replica's checks: a bad sample anywhere changes no copy.
            per_sample = replicas.center_loss(self.centers, labels, features, self.alpha,
                                              training, update_weights, update_on=None)
            return tf.where(valid, per_sample, nan)
        # One sparse read serves the loss and the update: the loss sees the
        # pre-update centers, and the cost does not grow with num_classes.
        # (Sharded under ParameterServerStrategy: each shard reads its rows.)
        centers_batch = tf.cast(tf.stop_gradient(shards.read_rows(self.centers, labels)),
                                compute_dtype)
        per_sample = formulas.per_sample_center_loss(features, centers_batch)
        # A where, not a multiply: no gradient reaches the NaN.
        per_sample = tf.where(valid, per_sample, nan)

        def update():
            ids, deltas = formulas.center_update(
                labels, tf.stop_gradient(features), centers_batch, self.alpha, update_weights,
                per_sample=True)
            shards.subtract_rows(self.centers, ids, tf.cast(deltas, tf.float32))
            return tf.constant(True)

        if training is True:
            update()
        elif training is not False:
            tf.cond(tf.cast(training, tf.bool), update, lambda: tf.constant(False))
        return per_sample
