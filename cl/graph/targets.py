"""What Keras 2 passes as `y_true`, turned into checked class ids.

Keras 2 feeds targets as class ids `[batch]` / `[batch, 1]` (ints, or the
float dtype of the model's output) or one-hot / soft rows `[batch, C]`, and
often with a last dimension unknown until run time. These functions give
the int64 class ids (and, for the softmax half, the one-hot targets) with
the rules of `cl.rules` checked at run time before anything uses them.
Used by the blog's `cl.loss` (`cl.ops`) and the Keras 2 losses and metrics.
"""

import tensorflow as tf

from cl import rules
from cl.graph import checks

# Every whole number up to this is exact in the dtype; a class id above it
# may already have been rounded to another class before cl sees it.
EXACT_INTEGERS = {tf.float16: 2048, tf.bfloat16: 256}


def class_ids(y_true, num_classes, what, sample_weight=None, unlabeled_rows="error"):
    """Checked int64 class ids `[batch]` from Keras-style targets.

    Accepts class ids `[batch]` / `[batch, 1]` (ints, or the floats Keras
    feeds) and one-hot or soft `[batch, num_classes]` rows (the class is the
    argmax). Keras target placeholders often have an unknown last dimension,
    so that choice is made at run time when needed. Run-time checks, before
    anything uses the ids: whole numbers in `[0, num_classes)`; ids exact in
    a 16-bit target dtype; every one-hot row names a class (an all-zero or
    NaN row, the usual "unlabeled" marker, is an error unless its
    `sample_weight` is 0; mask samples with sample weight 0). Metrics,
    which get no sample weights when Keras builds them and move nothing,
    pass `unlabeled_rows="argmax"` to read such rows as their argmax.
    """
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    width = tf.compat.dimension_value(y_true.shape[1]) if rank == 2 else None
    expected = (f"class ids [batch] or [batch, 1], or one-hot [batch, "
                f"{num_classes}]")
    if rank not in (1, 2) or width not in (None, 1, num_classes):
        raise ValueError(f"{what}: labels must be {expected}; received shape {y_true.shape}.")
    if rank == 1 or width == 1:
        check_exact(y_true.dtype, num_classes, what)
        ids = sparse_ids(y_true if rank == 1 else y_true[:, 0], num_classes, what)
    elif width == num_classes:
        ids = onehot_ids(y_true, sample_weight, what, unlabeled_rows)
    else:
        runtime_width = tf.shape(y_true)[1]
        check = tf.compat.v1.Assert(
            tf.logical_or(tf.equal(runtime_width, 1), tf.equal(runtime_width, num_classes)),
            [f"{what}: labels must be {expected}; received shape", tf.shape(y_true)])
        with tf.control_dependencies([check]):
            ids = tf.cond(tf.equal(runtime_width, 1),
                          lambda: sparse_ids(y_true[:, 0], num_classes, what),
                          lambda: onehot_ids(y_true, sample_weight, what, unlabeled_rows))
    with tf.control_dependencies([checks.range_assertion(ids, num_classes, what)]):
        return tf.identity(ids)


def exact_limit_message(dtype, num_classes, what):
    limit = EXACT_INTEGERS[dtype]
    return (f"{what}: the labels reach cl as {dtype.name} (Keras gives a target "
            f"the dtype of its output, here a 16-bit output under a "
            f"mixed-precision policy), and {dtype.name} holds class ids exactly "
            f"only up to {limit}; with num_classes={num_classes} larger ids would "
            f"silently become other classes. Give this output a float32 dtype "
            f"(e.g. end the model with keras.layers.Activation('linear', "
            f"dtype='float32')), as Keras's mixed-precision guide advises, or "
            f"pass one-hot labels.")


def check_exact(dtype, num_classes, what):
    """16-bit sparse targets: refuse at build time when ids can be rounded."""
    if dtype in EXACT_INTEGERS and num_classes > EXACT_INTEGERS[dtype] + 1:
        raise ValueError(exact_limit_message(dtype, num_classes, what))


def sparse_ids(labels, num_classes, what):
    if labels.dtype.is_integer:
        return tf.cast(labels, tf.int64)
    whole = tf.equal(labels, tf.round(labels))
    checks = [tf.compat.v1.Assert(
        tf.reduce_all(whole),
        [f"{what}: {rules.WHOLE_NUMBERS}; received", tf.boolean_mask(labels, tf.logical_not(whole)),
         "at batch position(s):", tf.where(tf.logical_not(whole))[:, 0]], summarize=20)]
    if labels.dtype in EXACT_INTEGERS and num_classes > EXACT_INTEGERS[labels.dtype] + 1:
        # Reached only when the width is known at run time alone: ids below
        # the limit cannot be the rounding of a larger one.
        limit = tf.cast(EXACT_INTEGERS[labels.dtype], labels.dtype)
        checks.append(tf.compat.v1.Assert(
            tf.reduce_all(labels < limit),
            [exact_limit_message(labels.dtype, num_classes, what) + " Received:",
             tf.boolean_mask(labels, labels >= limit)], summarize=20))
    with tf.control_dependencies(checks):
        return tf.cast(labels, tf.int64)


def onehot_ids(rows, sample_weight, what, unlabeled_rows="error"):
    """argmax of each row, after checking that each row names a class."""
    if unlabeled_rows == "argmax":
        return tf.argmax(rows, axis=-1)
    names_a_class = rules.row_names_a_class(tf.cast(rows, tf.float32))
    if sample_weight is not None:
        weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        names_a_class = tf.logical_or(names_a_class, tf.equal(weight, 0.0))
    check = tf.compat.v1.Assert(
        tf.reduce_all(names_a_class),
        [f"{what}: one-hot label rows must name a class; rows that are all "
         "zero or hold NaN (e.g. an 'unlabeled' marker) would train as an "
         "arbitrary class. Give such samples sample weight 0, or drop them. "
         "Row(s):", tf.where(tf.logical_not(names_a_class))[:, 0]],
        summarize=20, name="onehot_rows_name_a_class")
    with tf.control_dependencies([check]):
        return tf.argmax(rows, axis=-1)


def softmax_targets(y_true, num_classes, what, sample_weight=None):
    """`(targets [batch, num_classes], class ids [batch])` for the softmax half.

    One-hot or soft rows are the cross-entropy targets as given (label
    smoothing kept; the centers use the argmax class); class ids become
    one-hot rows. Both wait for `class_ids`'s checks.
    """
    y_true = tf.convert_to_tensor(y_true)
    ids = class_ids(y_true, num_classes, what, sample_weight)
    onehot = tf.one_hot(ids, num_classes)
    width = tf.compat.dimension_value(y_true.shape[1]) if y_true.shape.rank == 2 else None
    if y_true.shape.rank == 1 or width == 1:
        return onehot, ids
    rows = tf.cast(y_true, tf.float32)
    if width is None:
        rows = tf.cond(tf.equal(tf.shape(y_true)[1], 1),
                       lambda: onehot, lambda: tf.reshape(rows, tf.shape(onehot)))
    with tf.control_dependencies([ids]):
        # NaN rows of weight-0 samples must not reach the loss value.
        rows = tf.where(tf.math.is_finite(rows), rows, tf.zeros_like(rows))
        return tf.identity(rows), ids
