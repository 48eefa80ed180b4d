"""The label, feature and weight rules (`cl.rules`) as TensorFlow checks.

One place for every TensorFlow front-end: `cl.ops` (and so the Keras 2
losses), the TF1 towers, `cl.tf2` and `cl.keras3` on TensorFlow. What can
be known when the graph (or a `tf.function`) is built raises then
(`ValueError` / `TypeError`); the rest are run-time asserts that the reads
and writes of the table wait for, so a bad batch changes nothing (on GPUs
`tf.gather` returns zeros for an out-of-range id instead of failing). Each
run-time check also gives a `[batch]` mask of the valid samples, for the
front-ends whose asserts may be dropped (XLA): they leave bad samples out.
Every message says what was received and what was expected.
"""

import tensorflow as tf

from cl import rules


def compute_dtype(dtype):
    """float64 stays float64; every other float (16-bit too) is computed in float32."""
    return tf.as_dtype(rules.compute_dtype_name(tf.as_dtype(dtype).name))


def check_features(features, what, dim=None):
    """The feature dimension of float `[batch, dim]` features (`dim` if given)."""
    if not features.dtype.is_floating:
        raise TypeError(
            f"{what}: features must be float16, bfloat16, float32 or float64 of shape "
            f"[batch, dim]; received {features.dtype.name} of shape {features.shape}.")
    width = tf.compat.dimension_value(features.shape[1]) if features.shape.rank == 2 else None
    if features.shape.rank != 2 or (dim is not None and width not in (None, dim)):
        raise ValueError(
            f"{what}: features must have shape [batch, dim{'' if dim is None else f'={dim}'}]; "
            f"received shape {features.shape} (rank {features.shape.rank}).")
    if width is None and dim is None:
        raise ValueError(
            f"{what}: the feature dimension must be known when the graph is "
            f"built (it sizes the centers table); received shape {features.shape}.")
    return width if dim is None else dim


def check_labels(labels, features, what):
    """What can be checked on labels while the graph is built; returns the
    labels as int32 or int64 (the dtypes gather and unique take)."""
    if not labels.dtype.is_integer:
        raise TypeError(
            f"{what}: labels must be integer class ids (int32 or int64) of shape "
            f"[batch]; received {labels.dtype.name}. Cast labels that are whole "
            f"numbers with tf.cast(labels, tf.int32); for one-hot labels pass "
            f"tf.argmax(labels, axis=-1).")
    if labels.shape.rank is not None and labels.shape.rank != 1:
        raise ValueError(
            f"{what}: labels must have shape [batch] (class ids); received "
            f"shape {labels.shape}.")
    batch_labels = tf.compat.dimension_value(labels.shape[0]) if labels.shape.rank else None
    batch_features = tf.compat.dimension_value(features.shape[0])
    if None not in (batch_labels, batch_features) and batch_labels != batch_features:
        raise ValueError(
            f"{what}: {rules.SAME_BATCH}; received labels of shape {labels.shape} "
            f"and features of shape {features.shape}.")
    return labels if labels.dtype in (tf.int32, tf.int64) else tf.cast(labels, tf.int64)


def assertion(condition, data, name):
    """A run-time assert of `condition`, showing `data` when it fails. One
    op: TF's own `Assert` wraps non-int32 data in a `cond`, several nodes
    each step, to spare GPUs a copy of a few bytes to the host. (Eagerly
    TF's own raises at once, with its message format.)"""
    if tf.executing_eagerly():
        return tf.compat.v1.Assert(condition, data, summarize=20, name=name)
    return tf.raw_ops.Assert(condition=condition, data=data, summarize=20, name=name)


def bad_entries(values, valid):
    """`[values that are not valid, "at batch position(s):", positions]`."""
    positions = tf.where(tf.logical_not(valid))[:, 0]
    return [tf.gather(values, positions), "at batch position(s):", positions]


def class_id_checks(labels, num_classes, what):
    """`(valid [batch] bool, run-time assert)` for class ids: integers, or
    floats (Keras 3's labels) that must also be whole numbers."""
    valid = rules.valid_class_ids(labels, num_classes)
    rule, received = rules.class_id_range(num_classes), "out-of-range label(s)"
    if labels.dtype.is_floating:
        rule, received = f"{rule}, and {rules.WHOLE_NUMBERS}", "invalid label(s)"
    return valid, assertion(tf.reduce_all(valid), [
        f"{what}: {rule}; received {received}:", *bad_entries(labels, valid)],
        name="labels_in_range")


def range_assertion(labels, num_classes, what):
    """Run-time check that every label is a class id in [0, num_classes)."""
    return class_id_checks(labels, num_classes, what)[1]


def weight_checks(weights, what):
    """`(valid [batch] bool, run-time assert)` for sample weights."""
    valid = rules.valid_weights(weights)
    return valid, assertion(tf.reduce_all(valid), [
        f"{what}: {rules.WEIGHTS}; received:", *bad_entries(weights, valid)],
        name="sample_weight_valid")


def label_checks(labels, features, num_classes, what):
    """`(valid [batch] bool, run-time asserts)`: one label per sample, each
    a class id in `[0, num_classes)`."""
    batch_labels = tf.shape(labels, out_type=tf.int64)[0]
    batch_features = tf.shape(features, out_type=tf.int64)[0]
    same_batch = assertion(
        tf.equal(batch_labels, batch_features),
        [f"{what}: {rules.SAME_BATCH}; received labels of batch size", batch_labels,
         "and features of batch size", batch_features], name="same_batch")
    valid, in_range = class_id_checks(labels, num_classes, what)
    return valid, [same_batch, in_range]


def checked_sample_weight(sample_weight, labels, dtype, what, keras_default=False):
    """`(weights [batch], valid [batch] bool, run-time asserts)` for a
    per-sample weight, or `(None, None, [])`.

    One weight per sample, `[batch]` or `[batch, 1]` (with `keras_default`,
    also `[1]`, which Keras 2 feeds when the user gives none); another shape
    is refused when known at build time, else at run time, and so are
    negative, NaN or Inf weights.
    """
    if sample_weight is None:
        return None, None, []
    weights = tf.cast(tf.convert_to_tensor(sample_weight, name="sample_weight"), dtype)
    if weights.shape.rank == 2 and tf.compat.dimension_value(weights.shape[1]) == 1:
        weights = weights[:, 0]
    size = tf.compat.dimension_value(weights.shape[0]) if weights.shape.rank == 1 else None
    batch = tf.compat.dimension_value(labels.shape[0]) if labels.shape.rank == 1 else None
    allowed = (batch, 1) if keras_default else (batch,)
    if weights.shape.rank not in (None, 1) or None not in (size, batch) and size not in allowed:
        raise ValueError(
            f"{what}: sample_weight must have shape [batch] (one weight per sample), "
            f"labels have shape {labels.shape}; received shape {weights.shape}. "
            f"Temporal sample weights (sample_weight_mode='temporal') are not "
            f"supported by center loss.")
    size, batch = tf.size(weights), tf.size(labels)
    fits = tf.equal(size, batch)
    if keras_default:
        fits = tf.logical_or(fits, tf.equal(size, 1))
    shape_check = assertion(
        fits, [f"{what}: sample_weight must have one weight per sample; received", size,
               "weights for a batch of", batch], name="sample_weight_size")
    with tf.control_dependencies([shape_check]):
        weights = tf.broadcast_to(tf.reshape(weights, [-1]), tf.shape(labels))
    valid, valid_values = weight_checks(weights, what)
    return weights, valid, [shape_check, valid_values]


def check_logits_width(logits, num_classes, what):
    """Static check that the logits are num_classes wide."""
    width = tf.compat.dimension_value(logits.shape[-1]) if logits.shape.rank else None
    if width is not None and width != num_classes:
        raise ValueError(
            f"{what}: the logits have {width} classes but num_classes is "
            f"{num_classes}. Set cl.NUM_CLASSES = {width} (blog style) or build "
            f"the loss with cl.SoftmaxCenterLoss(num_classes={width}).")
