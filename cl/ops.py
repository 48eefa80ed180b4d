"""Graph ops: the centers table, its guarded update, and the blog's losses.

The math is in `cl.formulas`; this module owns the TF1 plumbing around it:
a non-trainable `[num_classes, dim]` float32 table made with
`tf.compat.v1.get_variable`, label checks that run before any row is read or
written, and the update folded into the returned loss with
`control_dependencies`, so running the loss runs the update.
"""

import warnings
import weakref

import tensorflow as tf

from cl import compat, distribute, formulas, update_ties

CENTERS_NAME = "centers"
DEFAULT_SCOPE = "center_loss"

# Per graph: (variable scope, owner) -> centers variable. The owner is the
# Keras model being compiled (None for raw TF1 code), or a cl.CenterLoss
# instance; a new owner never silently shares another's table.
_TABLES = weakref.WeakKeyDictionary()


def _package_default(value, constant):
    """`value`, or the package-level constant (`cl.ALPHA`...) at call time.

    Read at call time so blog code that sets `cl.NUM_CLASSES = 10` before
    compiling is honoured.
    """
    if value is not None:
        return value
    import cl
    return getattr(cl, constant)


# Settings checks live with the formulas (no TensorFlow needed there).
check_alpha = formulas.check_alpha
check_num_classes = formulas.check_num_classes


def _check_features(features, what):
    if not features.dtype.is_floating:
        raise TypeError(
            f"{what}: features must be float16, bfloat16, float32 or float64; "
            f"received {features.dtype.name}.")
    if features.shape.rank != 2:
        raise ValueError(
            f"{what}: features must have shape [batch, dim]; received shape "
            f"{features.shape} (rank {features.shape.rank}).")
    dim = tf.compat.dimension_value(features.shape[1])
    if dim is None:
        raise ValueError(
            f"{what}: the feature dimension must be known when the graph is "
            f"built (it sizes the centers table); received shape {features.shape}.")
    return dim


def _check_labels(labels, features, what):
    """What can be checked on labels while the graph is built."""
    if not labels.dtype.is_integer:
        raise TypeError(
            f"{what}: labels must be int32 or int64 class ids of shape [batch];"
            f" received {labels.dtype.name}. For one-hot labels pass "
            f"tf.argmax(labels, axis=-1).")
    if labels.shape.rank is not None and labels.shape.rank != 1:
        raise ValueError(
            f"{what}: labels must have shape [batch] (class ids); received "
            f"shape {labels.shape}.")
    batch_labels = tf.compat.dimension_value(labels.shape[0]) if labels.shape.rank else None
    batch_features = tf.compat.dimension_value(features.shape[0])
    if None not in (batch_labels, batch_features) and batch_labels != batch_features:
        raise ValueError(
            f"{what}: labels and features must have the same batch size; "
            f"received labels {labels.shape} and features {features.shape}.")


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
        _check_exact(y_true.dtype, num_classes, what)
        ids = _sparse_ids(y_true if rank == 1 else y_true[:, 0], num_classes, what)
    elif width == num_classes:
        ids = _onehot_ids(y_true, sample_weight, what, unlabeled_rows)
    else:
        runtime_width = tf.shape(y_true)[1]
        check = tf.compat.v1.Assert(
            tf.logical_or(tf.equal(runtime_width, 1), tf.equal(runtime_width, num_classes)),
            [f"{what}: labels must be {expected}; received shape", tf.shape(y_true)])
        with tf.control_dependencies([check]):
            ids = tf.cond(tf.equal(runtime_width, 1),
                          lambda: _sparse_ids(y_true[:, 0], num_classes, what),
                          lambda: _onehot_ids(y_true, sample_weight, what, unlabeled_rows))
    with tf.control_dependencies([_range_assertion(ids, num_classes, what)]):
        return tf.identity(ids)


def _range_assertion(labels, num_classes, what):
    """Run-time check that every label is a class id in [0, num_classes)."""
    in_range = tf.logical_and(labels >= 0, labels < num_classes)
    return tf.compat.v1.Assert(
        tf.reduce_all(in_range),
        [f"{what}: labels must be class ids in [0, num_classes={num_classes});"
         " received out-of-range label(s):", tf.boolean_mask(labels, tf.logical_not(in_range)),
         "at batch position(s):", tf.where(tf.logical_not(in_range))[:, 0]],
        summarize=20, name="labels_in_range")


def _exact_limit_message(dtype, num_classes, what):
    limit = EXACT_INTEGERS[dtype]
    return (f"{what}: the labels reach cl as {dtype.name} (Keras gives a target "
            f"the dtype of its output, here a 16-bit output under a "
            f"mixed-precision policy), and {dtype.name} holds class ids exactly "
            f"only up to {limit}; with num_classes={num_classes} larger ids would "
            f"silently become other classes. Give this output a float32 dtype "
            f"(e.g. end the model with keras.layers.Activation('linear', "
            f"dtype='float32')), as Keras's mixed-precision guide advises, or "
            f"pass one-hot labels.")


def _check_exact(dtype, num_classes, what):
    """16-bit sparse targets: refuse at build time when ids can be rounded."""
    if dtype in EXACT_INTEGERS and num_classes > EXACT_INTEGERS[dtype] + 1:
        raise ValueError(_exact_limit_message(dtype, num_classes, what))


def _sparse_ids(labels, num_classes, what):
    if labels.dtype.is_integer:
        return tf.cast(labels, tf.int64)
    whole = tf.equal(labels, tf.round(labels))
    checks = [tf.compat.v1.Assert(
        tf.reduce_all(whole),
        [f"{what}: class ids must be whole numbers; received", tf.boolean_mask(labels, tf.logical_not(whole)),
         "at batch position(s):", tf.where(tf.logical_not(whole))[:, 0]], summarize=20)]
    if labels.dtype in EXACT_INTEGERS and num_classes > EXACT_INTEGERS[labels.dtype] + 1:
        # Reached only when the width is known at run time alone: ids below
        # the limit cannot be the rounding of a larger one.
        limit = tf.cast(EXACT_INTEGERS[labels.dtype], labels.dtype)
        checks.append(tf.compat.v1.Assert(
            tf.reduce_all(labels < limit),
            [_exact_limit_message(labels.dtype, num_classes, what) + " Received:",
             tf.boolean_mask(labels, labels >= limit)], summarize=20))
    with tf.control_dependencies(checks):
        return tf.cast(labels, tf.int64)


def _onehot_ids(rows, sample_weight, what, unlabeled_rows="error"):
    """argmax of each row, after checking that each row names a class."""
    if unlabeled_rows == "argmax":
        return tf.argmax(rows, axis=-1)
    names_a_class = tf.logical_and(
        tf.reduce_any(rows > 0, axis=1),
        tf.reduce_all(tf.math.is_finite(tf.cast(rows, tf.float32)), axis=1))
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


def _label_assertions(labels, features, num_classes, what):
    """Run-time checks; the gather and scatter wait for them, so a bad batch
    changes no center row (on GPUs tf.gather returns zeros, not an error)."""
    return [
        tf.compat.v1.assert_equal(
            tf.shape(labels, out_type=tf.int64),
            tf.shape(features, out_type=tf.int64)[:1],
            message=(f"{what}: labels must have shape [batch] matching "
                     f"features [batch, dim]; labels shape, features batch:"),
            data=[tf.shape(labels), tf.shape(features)[:1]]),
        _range_assertion(labels, num_classes, what),
    ]


def centers_variable(num_classes, dim, scope=DEFAULT_SCOPE, owner=None):
    """Creates, or reuses, the non-trainable centers table of `owner`.

    The table is `<variable scope>/<scope>/centers`, made by `get_variable`
    (zeros, float32, `[num_classes, dim]`) in the caller's variable scope, so
    TF1 towers in their own variable scopes get their own tables. A second
    call by the same owner reuses its table (the blog's raised "already
    exists"). `owner` is None for raw TF1 code, or a `cl.CenterLoss` used
    outside Keras compile; a different owner gets a fresh uniquified scope
    (`center_loss_1/centers`), never another's table. Keras models keep
    their tables themselves (`cl.keras2.site`).
    """
    graph = tf.compat.v1.get_default_graph()
    tables = _TABLES.setdefault(graph, {})
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    centers = tables.get((full_scope, owner))
    if centers is None:
        centers = new_table(num_classes, dim, scope)
        tables[(full_scope, owner)] = centers
    if tuple(centers.shape.as_list()) != (num_classes, dim):
        raise ValueError(
            f"The centers table '{centers.name}' has shape {centers.shape} but "
            f"this call needs [{num_classes}, {dim}]. Give each differently "
            f"configured center loss its own name (name=...) or use "
            f"cl.CenterLoss.")
    return centers


def new_table(num_classes, dim, scope=DEFAULT_SCOPE):
    """A new zero `[num_classes, dim]` float32 table `<scope>/centers`.

    If a table already has that name in this graph, the new one gets a
    uniquified scope (`center_loss_1/centers`) and a warning that says so.
    """
    graph = tf.compat.v1.get_default_graph()
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    names = {v.name for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
    taken = f"{full_scope}/{CENTERS_NAME}:0" in names
    # A taken scope gets the first free `<scope>_<k>` instead, chosen here
    # rather than by variable_scope(default_name=...): Keras 2 compiles under
    # a tf.distribute strategy with scope counts that do not see the first
    # table, and would pick the taken name again.
    scope_args = dict(name_or_scope=scope, reuse=tf.compat.v1.AUTO_REUSE)
    if taken:
        index = 1
        while f"{full_scope}_{index}/{CENTERS_NAME}:0" in names:
            index += 1
        scope_args = dict(name_or_scope=f"{scope}_{index}")
    with tf.compat.v1.variable_scope(**scope_args):
        centers = tf.compat.v1.get_variable(
            CENTERS_NAME, shape=[num_classes, dim], dtype=tf.float32,
            initializer=tf.compat.v1.zeros_initializer(), trainable=False,
            **distribute.table_options())  # {} without a tf.distribute strategy
    if taken:
        new_scope = centers.name[:-len(f"/{CENTERS_NAME}:0")]
        warnings.warn(
            f"cl: a centers table '{full_scope}/{CENTERS_NAME}' already exists "
            f"in this graph (another model or loss owns it); this one is "
            f"'{centers.name}'. Reach it with cl.centers_of(model) or "
            f"cl.get_centers('{new_scope}').", stacklevel=4)
    return centers


def _initialised_check(centers):
    """Turns TF's bare 'uninitialized value' into an error that says what to run."""
    return tf.compat.v1.Assert(
        tf.compat.v1.is_variable_initialized(centers),
        [f"cl: the centers table '{centers.name}' is not initialised. Keras: use "
         "cl.compile_model(model, ...), or after model.compile run "
         "cl.initialize(model). TF1 session: run "
         "sess.run(tf.compat.v1.global_variables_initializer()) before training."],
        name="centers_initialised")


def _apply_update(centers, labels, features, centers_batch, alpha, training,
                  weights=None):
    """The guarded scatter (NaN/Inf and weight-0 samples skipped by
    `formulas.center_update`), gated on `training`."""

    def update():
        class_ids, deltas = formulas.center_update(
            labels, features, centers_batch, alpha, weights)
        scatter = tf.compat.v1.scatter_sub(
            centers, class_ids, tf.cast(deltas, centers.dtype))
        # Depend on the scatter, never fetch its value: on a resource
        # variable that value is a read of the whole C x D table, a copy per
        # step that would make the cost grow with num_classes.
        with tf.control_dependencies([scatter]):
            return tf.constant(True)

    if training is None or training is True:
        return update()
    if training is False:
        return tf.constant(False)
    return tf.compat.v1.cond(tf.cast(training, tf.bool), update,
                             lambda: tf.constant(False))


@tf.autograph.experimental.do_not_convert
def center_loss(labels, features, alpha=None, num_classes=None, name=None,
                centers=None, training=None, sample_weight=None, update_on=None):
    """Per-sample center loss `1/2 * ||x_i - c_{y_i}||^2`, updating the centers.

    Running the returned tensor also applies the paper's update
    `c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)` to the rows
    of the classes in the batch (see `cl.formulas`). The loss is computed from
    the centers as they were before this step's update.

    Args:
      labels: int32/int64 `[batch]` class ids in `[0, num_classes)`.
      features: float `[batch, dim]` (float16/bfloat16 are computed in float32).
      alpha: center learning rate in [0, 1]; default `cl.ALPHA` at call time.
      num_classes: rows of the table; default `cl.NUM_CLASSES` at call time.
      name: name scope and variable scope of the table (default
        "center_loss"); the table is `<variable scope>/<name>/centers`.
      centers: an existing float32 `[num_classes, dim]` variable to use
        instead of creating or reusing one.
      training: None: update every time the op runs, except when Keras
        `compile` builds the loss: then only in training steps (Keras feeds
        its learning phase True to the train function alone, so evaluate,
        predict and validation_data never move the centers). Or a Python or
        tensor bool gating the update.
      update_on: what makes a `session.run` apply the update; default
        `cl.UPDATE_ON` at call time. "loss" (the blog's behaviour): running
        the loss, or any gradient of it (`train_op` alone too, with static
        or dynamic batch size). "gradient": only a run that computes the
        loss's gradient, so evaluation runs, hooks that fetch the loss and
        separate summary runs never move the centers (Estimator,
        MonitoredTrainingSession). Either way one run applies one update,
        however many times it uses the loss or its gradients.
      sample_weight: float `[batch]` >= 0, or None. The update is the paper's
        rule weighted by it (`cl.formulas`): a sample of weight 0 neither
        moves its center nor counts in n_j. The returned loss is NOT
        weighted (Keras and the caller weight per-sample losses themselves).
        Under Keras compile, Keras's sample_weight / class_weight are used.

    Returns:
      float32 `[batch]` (float64 for float64 features). A sample with NaN or
      Inf features gets a NaN/Inf loss, and never reaches the centers.

    Raises:
      ValueError / TypeError at graph construction for a bad alpha,
      num_classes, feature rank or dtype; InvalidArgumentError at run time,
      before any variable changes, for labels out of range or of a batch
      size different from the features, or negative/NaN sample weights.
    """
    what = "center_loss"
    compat.require_graph_mode(what)
    update_on = update_ties.check_update_on(_package_default(update_on, "UPDATE_ON"))
    alpha = check_alpha(_package_default(alpha, "ALPHA"))
    num_classes = check_num_classes(_package_default(num_classes, "NUM_CLASSES"))
    with tf.compat.v1.name_scope(name, DEFAULT_SCOPE, [labels, features]) as scope:
        features = tf.convert_to_tensor(features, name="features")
        labels = tf.convert_to_tensor(labels, name="labels")
        dim = _check_features(features, what)
        _check_labels(labels, features, what)
        # Under Keras compile: the model's own table, Keras's sample weights,
        # updates only in training steps, one update per table per step.
        site = compat.keras_compile_site()
        if centers is None and site is not None:
            centers = site.table(num_classes, dim, name or DEFAULT_SCOPE)
        elif centers is None:
            centers = centers_variable(num_classes, dim, name or DEFAULT_SCOPE)
        elif tuple(centers.shape.as_list()) != (num_classes, dim):
            raise ValueError(
                f"{what}: centers must have shape [num_classes={num_classes}, "
                f"dim={dim}]; received {centers.shape}.")
        if site is not None:
            site.adopt(centers)
            training = site.learning_phase if training is None else training
            sample_weight = site.sample_weight if sample_weight is None else sample_weight
            # Under a strategy: the template's loss reads, the clones' update.
            training = site.distributed_training(centers, training)
        compute_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
        features = tf.cast(features, compute_dtype)
        checks = _label_assertions(labels, features, num_classes, what)
        checks.append(_initialised_check(centers))
        weights, weight_checks = checked_sample_weight(sample_weight, labels, compute_dtype, what)
        checks += weight_checks
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
        if distribute.is_distributed(centers, training):
            # Under tf.distribute: one update from every replica's batch.
            return tf.identity(distribute.center_loss(
                centers, labels, features, alpha, training, weights, update_on), name=scope)
        # One read serves both the loss and the update, so the loss always
        # sees the pre-update centers.
        centers_batch = tf.cast(
            tf.stop_gradient(tf.gather(centers, labels)), compute_dtype)

        def per_sample(tied_features):
            return formulas.per_sample_center_loss(tied_features, centers_batch)

        if training is False:
            return tf.identity(per_sample(features), name=scope)
        if site is not None:
            updated = site.update(centers, labels, features, centers_batch,
                                  alpha, training, weights)
        else:
            updated = _apply_update(centers, labels, features, centers_batch,
                                    alpha, training, weights)
        # The gradient waits for the update (a static batch size lets
        # TensorFlow skip the loss op in `sess.run(train_op)`), and so does
        # the loss value unless update_on="gradient".
        return tf.identity(update_ties.tie(per_sample, features, updated, update_on),
                           name=scope)


def checked_sample_weight(sample_weight, labels, dtype, what):
    """`(weights [batch] or None, run-time checks)` for a per-sample weight.

    Keras feeds `[batch]` (or `[batch, 1]`); anything else is refused at
    build time, and negative or NaN weights at run time.
    """
    if sample_weight is None:
        return None, []
    weights = tf.cast(tf.convert_to_tensor(sample_weight, name="sample_weight"), dtype)
    if weights.shape.rank == 2 and tf.compat.dimension_value(weights.shape[1]) == 1:
        weights = weights[:, 0]
    if weights.shape.rank not in (None, 1):
        raise ValueError(
            f"{what}: sample_weight must have shape [batch] (one weight per "
            f"sample); received shape {weights.shape}. Temporal sample weights "
            f"(sample_weight_mode='temporal') are not supported by center loss.")
    size, batch = tf.size(weights), tf.size(labels)
    shape_check = tf.compat.v1.Assert(
        tf.logical_or(tf.equal(size, batch), tf.equal(size, 1)),
        [f"{what}: sample_weight must have shape [batch] (or [1], which Keras "
         "feeds as the default); sample_weight, labels shapes:",
         tf.shape(weights), tf.shape(labels)])
    with tf.control_dependencies([shape_check]):
        weights = tf.broadcast_to(weights, tf.shape(labels))
    bad = tf.logical_not(tf.logical_and(tf.math.is_finite(weights), weights >= 0))
    return weights, [
        shape_check,
        tf.compat.v1.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [f"{what}: sample weights must be finite and >= 0 (use 0 to mask "
             "a sample); received:", tf.boolean_mask(weights, bad),
             "at batch position(s):", tf.where(bad)[:, 0]],
            summarize=20, name="sample_weight_valid"),
    ]


@tf.autograph.experimental.do_not_convert
def softmax_loss(labels, features, name=None):
    """Per-sample softmax cross-entropy `[batch]` from one-hot labels and logits.

    `features` are logits (the model's last layer without softmax); computed
    stably from logits, in float32 for 16-bit inputs.
    """
    with tf.compat.v1.name_scope(name, "softmax_loss", [labels, features]):
        logits = tf.convert_to_tensor(features, name="logits")
        dtype = tf.float64 if logits.dtype == tf.float64 else tf.float32
        return tf.compat.v1.nn.softmax_cross_entropy_with_logits_v2(
            labels=tf.stop_gradient(tf.cast(labels, dtype)),
            logits=tf.cast(logits, dtype))


def check_logits_width(logits, num_classes, what):
    """Static check that the logits are num_classes wide."""
    width = tf.compat.dimension_value(logits.shape[-1]) if logits.shape.rank else None
    if width is not None and width != num_classes:
        raise ValueError(
            f"{what}: the logits have {width} classes but num_classes is "
            f"{num_classes}. Set cl.NUM_CLASSES = {width} (blog style) or build "
            f"the loss with cl.SoftmaxCenterLoss(num_classes={width}).")


@tf.autograph.experimental.do_not_convert
def softmax_center_loss(labels, features, num_classes, alpha, lambda_,
                        batch_sum=False, name=None, centers=None, training=None,
                        sample_weight=None, update_on=None):
    """`softmax_loss + lambda_ * center_loss` on logits, per sample `[batch]`.

    labels: one-hot (or soft) `[batch, num_classes]`, or class ids `[batch]`
    / `[batch, 1]` (see `class_ids`); the centers follow the argmax class.
    With `batch_sum=True` the center term is the blog's: summed over the
    batch and added to every sample, i.e. `lambda_ * sum_k 1/2||x_k - c_k||^2`.
    Since Keras averages per-sample losses, the per-sample form with
    `lambda = batch_size * lambda_blog` gives the same total loss.
    `training`, `sample_weight` and `update_on` are `center_loss`'s.
    """
    with tf.compat.v1.name_scope(name, "softmax_center_loss", [labels, features]):
        labels = tf.convert_to_tensor(labels, name="labels")
        features = tf.convert_to_tensor(features, name="logits")
        check_logits_width(features, num_classes, "cl.loss")
        site = compat.keras_compile_site()
        if sample_weight is None and site is not None:
            sample_weight = site.sample_weight
        targets, ids = softmax_targets(labels, num_classes, "cl.loss", sample_weight)
        center_term = center_loss(
            ids, features, alpha=alpha, num_classes=num_classes, centers=centers,
            training=training, sample_weight=sample_weight, update_on=update_on)
        if batch_sum:
            center_term = tf.reduce_sum(center_term) * tf.ones_like(center_term)
        softmax_term = softmax_loss(targets, features)
        return softmax_term + tf.cast(lambda_, center_term.dtype) * center_term


@tf.autograph.experimental.do_not_convert
def loss(labels, features, name=None, training=None, update_on=None):
    """The blog's combined loss: `softmax_loss + cl.LAMBDA * center_loss`.

    labels: one-hot `[batch, cl.NUM_CLASSES]` (class ids `[batch]` or
    `[batch, 1]` work too); features: logits `[batch, cl.NUM_CLASSES]`.
    Returns the per-sample loss `[batch]`. Uses the package constants
    `cl.NUM_CLASSES`, `cl.ALPHA`, `cl.LAMBDA` (and `cl.UPDATE_ON`) at call
    time. `training` and `update_on` are `center_loss`'s (e.g. an Estimator
    `model_fn` passes `training=(mode == ModeKeys.TRAIN)`).
    """
    return softmax_center_loss(
        labels, features,
        num_classes=check_num_classes(_package_default(None, "NUM_CLASSES")),
        alpha=_package_default(None, "ALPHA"),
        lambda_=_package_default(None, "LAMBDA"),
        name=name or "loss", training=training, update_on=update_on)


@tf.autograph.experimental.do_not_convert
def categorical_accuracy(y_true, y_pred, name=None):
    """1.0 where argmax of the one-hot labels equals argmax of the logits.

    Softmax is monotonic, so the logits' argmax is the prediction's.
    """
    with tf.compat.v1.name_scope(name, "categorical_accuracy", [y_true, y_pred]):
        return tf.cast(
            tf.equal(tf.argmax(y_true, axis=-1), tf.argmax(y_pred, axis=-1)),
            tf.float32)


def get_centers(scope=DEFAULT_SCOPE, graph=None):
    """The centers variable `<scope>/centers` of `graph` (default graph).

    Raises:
      KeyError naming the tables that exist, if there is none under `scope`.
    """
    graph = graph or tf.compat.v1.get_default_graph()
    wanted = f"{scope}/{CENTERS_NAME}:0"
    tables = [v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
              if v.name.endswith(f"{CENTERS_NAME}:0")]
    for variable in tables:
        if variable.name == wanted:
            return variable
    raise KeyError(
        f"No centers table '{wanted}' in this graph; tables present: "
        f"{[v.name for v in tables] or 'none (build the loss first)'}.")
