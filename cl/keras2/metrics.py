"""Keras 2 metrics on logits and on the centers (read-only)."""

import tensorflow as tf

from cl import formulas, ops, rules, settings
from cl.graph import shards, sites, targets
from cl.graph import table as graph_table


@tf.autograph.experimental.do_not_convert
def accuracy(y_true, y_pred):
    """Accuracy on logits for sparse `[batch]`/`[batch, 1]` or one-hot labels.

    Keras's string 'accuracy' guesses the label format from the loss; for
    cl's losses it guesses one-hot, which reads ~0 with sparse labels.
    `cl.compile_model` replaces 'accuracy'/'acc' with this.
    """
    logits = tf.convert_to_tensor(y_pred)
    labels = targets.class_ids(y_true, tf.compat.dimension_value(logits.shape[-1]), "cl.accuracy",
                           unlabeled_rows="argmax")
    return tf.cast(tf.equal(labels, tf.argmax(logits, axis=-1)), tf.float32)


def _table_settings(loss, site):
    """(num_classes, table name) of the cl loss this metric reads."""
    if loss is not None:
        return loss.num_classes, loss.name
    owner = site.output_loss if site is not None else None
    if owner is ops.loss or owner is None:
        # The blog's cl.loss (or no model): cl.NUM_CLASSES, default table.
        classes = formulas.check_num_classes(settings.NUM_CLASSES)
        return classes, graph_table.DEFAULT_SCOPE
    if hasattr(owner, "num_classes") and hasattr(owner, "alpha"):
        return owner.num_classes, owner.name  # a cl loss class, e.g. loaded
    raise ValueError(
        f"cl center metrics read the centers of a cl loss on the same output; "
        f"this output's loss is {owner!r}. Pass the loss: "
        f"cl.center_metrics(center_loss).")


def center_metrics(loss=None):
    """Per-batch Keras metrics for the table of a cl loss on the same output.

    `loss`: the cl loss object whose table to read; by default the cl loss
    compiled for the metric's output (the blog's `cl.loss`, or a
    `cl.CenterLoss` / `cl.SoftmaxCenterLoss`, also one loaded by
    `load_model`). Returns `[center_distance, center_ratio]`:
      center_distance: mean ||x_i - c_{y_i}|| over the batch.
      center_ratio: center_distance / mean distance between the centers of
        the classes in the batch (O(B^2 D), independent of num_classes).
        0 while those centers coincide (at the start, all are zero).
    Both read the centers before the step's update; they never update them.
    """
    def parts(y_true, y_pred):
        # Keras builds metrics before losses, so this may create the model's
        # table that the loss then finds (same model, same name).
        y_pred = tf.convert_to_tensor(y_pred)
        if tf.distribute.has_strategy():
            raise NotImplementedError(rules.center_metrics_under_strategy(
                type(tf.distribute.get_strategy()).__name__))
        site = sites.current()
        classes, name = _table_settings(loss, site)
        dim = tf.compat.dimension_value(y_pred.shape[-1])
        if site is not None:
            owner = loss if loss is not None else site.output_loss
            table = site.table(classes, dim, name,
                               shards.partitioner_of(getattr(owner, "partitioner", None)))
        elif loss is not None:
            table = loss.table(y_pred, None)
        else:
            table = graph_table.centers_variable(classes, dim)
        labels = targets.class_ids(y_true, classes, "center metrics", unlabeled_rows="argmax")
        features = tf.cast(y_pred, tf.float32)
        # As the loss's read: not before the table is initialised and holds
        # its declared shape (a checkpoint of another shape restored as it is).
        with tf.control_dependencies([graph_table.initialised_check(table)]):
            centers_batch = shards.read_rows(table, labels)
        if site is not None:
            site.note_read(table, centers_batch)
        distance = tf.norm(features - centers_batch, axis=1)
        return labels, centers_batch, distance

    @tf.autograph.experimental.do_not_convert
    def center_distance(y_true, y_pred):
        return parts(y_true, y_pred)[2]

    @tf.autograph.experimental.do_not_convert
    def center_ratio(y_true, y_pred):
        labels, centers_batch, distance = parts(y_true, y_pred)
        _, first_of_class = tf.unique(labels)
        present = tf.math.unsorted_segment_max(
            centers_batch, first_of_class, tf.reduce_max(first_of_class) + 1)
        count = tf.cast(tf.shape(present)[0], tf.float32)
        gaps = tf.norm(present[:, None, :] - present[None, :, :], axis=-1)
        between = tf.math.divide_no_nan(tf.reduce_sum(gaps), count * (count - 1.0))
        return tf.math.divide_no_nan(distance, between)

    return [center_distance, center_ratio]
