"""TF1 towers: one graph, one tower per device, no tf.distribute, one table.

(Under tf.distribute strategies `cl.center_loss` itself is exact: see
`cl.graph.replicas`.)
"""

import tensorflow as tf

from cl import formulas, ops
from cl.graph import checks, shards, table, ties


class TowerCenterLoss:
    """Center loss for TF1 towers (one graph, one tower per device, no
    tf.distribute) sharing one centers table, updated once per step.

    If every tower ran `cl.center_loss` on a shared table, each would apply
    its own update, with n_j counted over its own batch, in an order that
    changes from step to step. Here the towers only read the table; one
    update op applies the paper's rule to the concatenation of every tower's
    batch, after every tower's read:

        towers = cl.TowerCenterLoss(num_classes=10, alpha=0.5)
        for i, device in enumerate(["/gpu:0", "/gpu:1"]):
            with tf.device(device):
                center_term = towers(labels[i], embeddings[i])   # [batch_i], reads only
                ...                                              # the tower's loss, gradients
        update = towers.update_op()
        train_op = tf.group(optimizer.apply_gradients(average_grads), update)

    Run `update` in the same `session.run` as the towers' losses (it depends
    on them, so it always runs after them and the losses see the pre-update
    centers); a step that runs only the losses (evaluation) moves nothing.

    Args:
      num_classes: rows of the table.
      alpha: center learning rate in [0, 1].
      name: variable scope of the table, created by the first tower call in
        that call's variable scope (`<scope>/<name>/centers`), as
        `cl.center_loss` does; each instance owns its table.
      centers: an existing float32 `[num_classes, dim]` variable to use
        instead (e.g. created under `tf.device("/cpu:0")`).

    Calling it: `(labels, features, weights=None)`, labels int `[batch]`,
    features float `[batch, dim]`, optional per-sample weights float
    `[batch]` for the update (see `cl.formulas.center_update`); returns the
    per-sample loss `[batch]` as `cl.center_loss` does, without updating.
    """

    def __init__(self, num_classes, alpha=0.5, name="center_loss", centers=None):
        self.num_classes = formulas.check_num_classes(num_classes)
        self.alpha = formulas.check_alpha(alpha)
        self.name = name
        self.centers = centers
        self._towers = []
        self._update = None

    def __call__(self, labels, features, weights=None):
        if self._update is not None:
            raise RuntimeError(
                "TowerCenterLoss: a tower was added after update_op() was built; "
                "its batch would not be in the update. Build every tower first.")
        labels = tf.convert_to_tensor(labels, name="labels")
        features = tf.convert_to_tensor(features, name="features")
        if self.centers is None:
            dim = checks.check_features(features, "TowerCenterLoss")
            self.centers = table.centers_variable(self.num_classes, dim, self.name,
                                                  owner=("towers", id(self)))
        loss = ops.center_loss(labels, features, alpha=self.alpha,
                               num_classes=self.num_classes, name=self.name,
                               centers=self.centers, training=False)
        self._towers.append((labels, features, weights, loss))
        return loss

    def update_op(self, name=None):
        """The op applying the paper's update for all towers' batches at once."""
        if self._update is not None:
            return self._update
        if not self._towers:
            raise RuntimeError("TowerCenterLoss.update_op: call the loss on every "
                               "tower's batch first.")
        labels, features, weights, losses = zip(*self._towers)
        dtype = tf.float64 if any(f.dtype == tf.float64 for f in features) else tf.float32
        with tf.compat.v1.name_scope(name, f"{self.name}_update"):
            if all(w is None for w in weights):
                weights = None
            else:
                weights = tf.concat(
                    [tf.ones(tf.shape(x)[:1], dtype) if w is None else tf.cast(w, dtype)
                     for x, w in zip(features, weights)], axis=0)
            labels = tf.concat([tf.cast(y, tf.int64) for y in labels], axis=0)
            features = tf.concat([tf.cast(x, dtype) for x in features], axis=0)
            # After every tower's read (which also checked its labels).
            with tf.control_dependencies(losses):
                rows = tf.cast(shards.read_rows(self.centers, labels), dtype)
            ties.claim(self.centers, "cl.TowerCenterLoss", labels)
            ids, deltas = formulas.center_update(
                labels, features, rows, self.alpha, weights, per_sample=True)
            scatter = shards.subtract_rows(self.centers, ids, tf.cast(deltas, tf.float32))
            with tf.control_dependencies([scatter]):
                self._update = tf.no_op(name="update")
        return self._update
