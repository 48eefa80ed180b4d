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

from cl import compat, formulas

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


def check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha (the center learning rate) must be a number in [0, 1]; "
            f"received {alpha!r}. The paper uses 0.5.")
    return float(alpha)


def check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an int >= 1; received {num_classes!r}.")
    return num_classes


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


def _label_assertions(labels, features, num_classes, what):
    """Run-time checks; the gather and scatter wait for them, so a bad batch
    changes no center row (on GPUs tf.gather returns zeros, not an error)."""
    in_range = tf.logical_and(labels >= 0, labels < num_classes)
    return [
        tf.compat.v1.assert_equal(
            tf.shape(labels, out_type=tf.int64),
            tf.shape(features, out_type=tf.int64)[:1],
            message=(f"{what}: labels must have shape [batch] matching "
                     f"features [batch, dim]; labels shape, features batch:"),
            data=[tf.shape(labels), tf.shape(features)[:1]]),
        tf.compat.v1.Assert(
            tf.reduce_all(in_range),
            [f"{what}: labels must be class ids in [0, num_classes={num_classes});"
             " received out-of-range label(s):",
             tf.boolean_mask(labels, tf.logical_not(in_range)),
             "at batch position(s):",
             tf.where(tf.logical_not(in_range))[:, 0]],
            summarize=20, name="labels_in_range"),
    ]


def owner_of(model):
    """Owner of a table made without an explicit one: the Keras model being
    compiled (so two models never share), or None for raw TF1 code."""
    return None if model is None else ("keras model", id(model))


def centers_variable(num_classes, dim, scope=DEFAULT_SCOPE, owner=None):
    """Creates, or reuses, the non-trainable centers table of `owner`.

    The table is `<variable scope>/<scope>/centers`, made by `get_variable`
    (zeros, float32, `[num_classes, dim]`) in the caller's variable scope, so
    TF1 towers in their own variable scopes get their own tables. A second
    call by the same owner reuses its table (the blog's raised "already
    exists"). A different owner, e.g. a second Keras model in the same graph,
    gets a fresh uniquified scope (`center_loss_1/centers`), never another
    model's table.
    """
    graph = tf.compat.v1.get_default_graph()
    tables = _TABLES.setdefault(graph, {})
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    centers = tables.get((full_scope, owner))
    if centers is None:
        taken = any(key[0] == full_scope for key in tables)
        # A taken scope gets a uniquified one (default_name) instead.
        scope_args = (dict(name_or_scope=None, default_name=scope) if taken else
                      dict(name_or_scope=scope, reuse=tf.compat.v1.AUTO_REUSE))
        with tf.compat.v1.variable_scope(**scope_args):
            centers = tf.compat.v1.get_variable(
                CENTERS_NAME, shape=[num_classes, dim], dtype=tf.float32,
                initializer=tf.compat.v1.zeros_initializer(), trainable=False)
        tables[(full_scope, owner)] = centers
        if taken:
            warnings.warn(
                f"cl: the centers table under '{full_scope}' belongs to another "
                f"model; this loss gets its own table '{centers.name}'. Reach it "
                f"with cl.centers_of(model).", stacklevel=3)
    if tuple(centers.shape.as_list()) != (num_classes, dim):
        raise ValueError(
            f"The centers table '{centers.name}' has shape {centers.shape} but "
            f"this call needs [{num_classes}, {dim}]. Give each differently "
            f"configured center loss its own name (name=...) or use "
            f"cl.CenterLoss.")
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
                centers=None, training=None):
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

    Returns:
      float32 `[batch]` (float64 for float64 features). A sample with NaN or
      Inf features gets a NaN/Inf loss, and never reaches the centers.

    Raises:
      ValueError / TypeError at graph construction for a bad alpha,
      num_classes, feature rank or dtype; InvalidArgumentError at run time,
      before any center row changes, for labels out of range or of a batch
      size different from the features.
    """
    what = "center_loss"
    compat.require_graph_mode(what)
    alpha = check_alpha(_package_default(alpha, "ALPHA"))
    num_classes = check_num_classes(_package_default(num_classes, "NUM_CLASSES"))
    with tf.compat.v1.name_scope(name, DEFAULT_SCOPE, [labels, features]) as scope:
        features = tf.convert_to_tensor(features, name="features")
        labels = tf.convert_to_tensor(labels, name="labels")
        dim = _check_features(features, what)
        _check_labels(labels, features, what)
        model = compat.keras_model_being_compiled()
        if centers is None:
            centers = centers_variable(num_classes, dim, name or DEFAULT_SCOPE,
                                       owner=owner_of(model))
        elif tuple(centers.shape.as_list()) != (num_classes, dim):
            raise ValueError(
                f"{what}: centers must have shape [num_classes={num_classes}, "
                f"dim={dim}]; received {centers.shape}.")
        if model is not None:
            # Built by Keras compile: update only in training steps, and make
            # the table part of the model's checkpoints.
            from cl import keras_support
            keras_support.attach_centers(model, centers)
            if training is None:
                training = compat.keras_backend(model).learning_phase()
        compute_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
        features = tf.cast(features, compute_dtype)
        checks = _label_assertions(labels, features, num_classes, what)
        checks.append(_initialised_check(centers))
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
        # One read serves both the loss and the update, so the loss always
        # sees the pre-update centers.
        centers_batch = tf.cast(
            tf.stop_gradient(tf.gather(centers, labels)), compute_dtype)
        per_sample = formulas.per_sample_center_loss(features, centers_batch)
        updated = _apply_update(centers, labels, features, centers_batch,
                                alpha, training)
        with tf.control_dependencies([updated]):
            return tf.identity(per_sample, name=scope)


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


def check_onehot_width(labels, logits, num_classes, what):
    """Static check that one-hot labels and logits are num_classes wide."""
    width = tf.compat.dimension_value(logits.shape[-1]) if logits.shape.rank else None
    if width is not None and width != num_classes:
        raise ValueError(
            f"{what}: the logits have {width} classes but num_classes is "
            f"{num_classes}. Set cl.NUM_CLASSES = {width} (blog style) or build "
            f"the loss with cl.SoftmaxCenterLoss(num_classes={width}).")
    label_width = tf.compat.dimension_value(labels.shape[-1]) if labels.shape.rank else None
    if label_width is not None and width is not None and label_width != width:
        raise ValueError(
            f"{what}: one-hot labels have shape {labels.shape} but the logits "
            f"have shape {logits.shape}; they must match.")


@tf.autograph.experimental.do_not_convert
def softmax_center_loss(labels, features, num_classes, alpha, lambda_,
                        batch_sum=False, name=None, centers=None, training=None):
    """`softmax_loss + lambda_ * center_loss` on logits, per sample `[batch]`.

    With `batch_sum=True` the center term is the blog's: summed over the
    batch and added to every sample, i.e. `lambda_ * sum_k 1/2||x_k - c_k||^2`.
    Since Keras averages per-sample losses, the per-sample form with
    `lambda = batch_size * lambda_blog` gives the same total loss.
    """
    with tf.compat.v1.name_scope(name, "softmax_center_loss", [labels, features]):
        labels = tf.convert_to_tensor(labels, name="labels")
        features = tf.convert_to_tensor(features, name="logits")
        check_onehot_width(labels, features, num_classes, "cl.loss")
        center_term = center_loss(
            tf.argmax(labels, axis=-1), features, alpha=alpha,
            num_classes=num_classes, centers=centers, training=training)
        if batch_sum:
            center_term = tf.reduce_sum(center_term) * tf.ones_like(center_term)
        softmax_term = softmax_loss(labels, features)
        return softmax_term + tf.cast(lambda_, center_term.dtype) * center_term


@tf.autograph.experimental.do_not_convert
def loss(labels, features, name=None):
    """The blog's combined loss: `softmax_loss + cl.LAMBDA * center_loss`.

    labels: one-hot `[batch, cl.NUM_CLASSES]`; features: logits of the same
    shape. Returns the per-sample loss `[batch]`. Uses the package constants
    `cl.NUM_CLASSES`, `cl.ALPHA`, `cl.LAMBDA` at call time.
    """
    return softmax_center_loss(
        labels, features,
        num_classes=check_num_classes(_package_default(None, "NUM_CLASSES")),
        alpha=_package_default(None, "ALPHA"),
        lambda_=_package_default(None, "LAMBDA"),
        name=name or "loss")


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
