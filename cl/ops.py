"""The blog's API: `center_loss`, `softmax_loss`, `loss`, `softmax_center_loss`,
`categorical_accuracy`, `get_centers`, composed from the graph primitives.

The math is `cl.formulas`; the label rules `cl.graph.checks`; the table and
its guarded update `cl.graph.table`; the update across replicas
`cl.graph.replicas`; what makes a session run the update `cl.graph.ties`;
the Keras 2 model being compiled, if any, `cl.graph.sites`. Running the
returned loss (or its gradient) runs the update, as the blog's `cl.py` did
with `control_dependencies`.
"""

import tensorflow as tf

from cl import compat, formulas, rules, settings
from cl.graph import checks, replicas, shards, sites, table, targets, ties


@tf.autograph.experimental.do_not_convert
def center_loss(labels, features, alpha=None, num_classes=None, name=None,
                centers=None, training=None, sample_weight=None, update_on=None,
                partitioner=None):
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
      centers: an existing float32 `[num_classes, dim]` variable (or
        PartitionedVariable split by rows) to use instead of creating or
        reusing one.
      training: None: update every time the op runs, except when Keras
        `compile` builds the loss (then only in training steps: Keras feeds
        its learning phase True to the train function alone, so evaluate,
        predict and validation_data never move the centers) and when an
        Estimator builds its model_fn for evaluate or predict (read only).
        Or a Python or tensor bool gating the update. One table takes one
        updating call per graph (a second is refused: ValueError); calls
        with `training=False` only read it.
      update_on: what makes a `session.run` apply the update; default
        `cl.UPDATE_ON` at call time. "loss" (the blog's behaviour): running
        the loss, or any gradient of it (`train_op` alone too, with static
        or dynamic batch size). "gradient": only a run that computes the
        loss's gradient, so evaluation runs, hooks that fetch the loss and
        separate summary runs never move the centers. "update_ops": the
        update joins `tf.compat.v1.GraphKeys.UPDATE_OPS` and nothing else,
        BatchNormalization's idiom: a train op built under
        `tf.control_dependencies(tf.compat.v1.get_collection(UPDATE_OPS))`
        moves the centers once per run even when no gradient reaches the
        features (a frozen backbone), and no other run does (evaluation,
        serving). Either way one run applies one update, however many
        times it uses the loss or its gradients. Under Keras 2 compile the
        mode does not matter: every training step updates once.
      sample_weight: float `[batch]` >= 0, or None. The update is the paper's
        rule weighted by it (`cl.formulas`): a sample of weight 0 neither
        moves its center nor counts in n_j. The returned loss is NOT
        weighted (Keras and the caller weight per-sample losses themselves).
        Under Keras compile, Keras's sample_weight / class_weight are used.
      partitioner: a TF1 partitioner (`tf.compat.v1.fixed_size_partitioner(4)`)
        to split a new table by rows into shards; by default the variable
        scope's, if it has one. A step reads and updates only the batch's
        rows, each on its shard (`cl.graph.shards`).

    Returns:
      float32 `[batch]` (float64 for float64 features). A sample with NaN or
      Inf features gets a NaN/Inf loss, and never reaches the centers.

    Raises:
      ValueError / TypeError at graph construction for a bad alpha,
      num_classes, feature rank or dtype, or a second updating call on
      the same table; RuntimeError inside a loop or conditional body
      (while_loop, map_fn, cond: call it outside, see the message);
      InvalidArgumentError at run time, before any variable changes, for
      labels out of range or of a batch size different from the features,
      negative/NaN sample weights, or a table that is not initialised or
      holds a restored value of another shape than declared.
    """
    # One function on purpose: the steps below (checks, table, Keras's
    # context, the read, the update, the ties) must happen in this order
    # inside one name scope, and each is a call into cl.graph.
    what = "center_loss"
    body = compat.control_flow_body()
    if body is not None:
        raise RuntimeError(rules.control_flow_body(f"cl.{what}", body))
    compat.require_graph_mode(what)
    update_on = ties.check_update_on(settings.value_or_default(update_on, "UPDATE_ON"))
    alpha = formulas.check_alpha(settings.value_or_default(alpha, "ALPHA"))
    num_classes = formulas.check_num_classes(
        settings.value_or_default(num_classes, "NUM_CLASSES"))
    with tf.compat.v1.name_scope(name, table.DEFAULT_SCOPE, [labels, features]) as scope:
        features = tf.convert_to_tensor(features, name="features")
        labels = tf.convert_to_tensor(labels, name="labels")
        dim = checks.check_features(features, what)
        labels = checks.check_labels(labels, features, what)
        # Under Keras compile: the model's own table, Keras's sample weights,
        # updates only in training steps, one update per table per step.
        site = sites.current()
        if centers is None and site is not None:
            centers = site.table(num_classes, dim, name or table.DEFAULT_SCOPE, partitioner)
        elif centers is None:
            centers = table.centers_variable(num_classes, dim, name or table.DEFAULT_SCOPE,
                                             partitioner=partitioner)
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
            # Keras 2's train function runs the loss in every step, and its
            # learning phase gates the update: the loss tie fires once per
            # step in every mode, whatever the gradient reaches.
            update_on = ties.LOSS
        elif training is None and compat.estimator_mode() not in (None, "train"):
            # Estimator's evaluate and predict (and serving exports): read only.
            training = False
        if training is not False and site is None:
            ties.claim(centers, f"cl.{what}", labels)
        compute_dtype = checks.compute_dtype(features.dtype)
        features = tf.cast(features, compute_dtype)
        weights, _, weight_assertions = checks.checked_sample_weight(
            sample_weight, labels, compute_dtype, what, keras_default=site is not None)
        assertions = (checks.label_checks(labels, features, num_classes, what)[1]
                      + [table.initialised_check(centers)] + weight_assertions)
        with tf.control_dependencies(assertions):
            labels = tf.identity(labels)
        if replicas.is_distributed(centers, training):
            # Under tf.distribute: one update from every replica's batch.
            return tf.identity(replicas.center_loss(
                centers, labels, features, alpha, training, weights, update_on), name=scope)
        # One read serves both the loss and the update, so the loss always
        # sees the pre-update centers.
        centers_batch = tf.cast(
            tf.stop_gradient(shards.read_rows(centers, labels)), compute_dtype)

        def per_sample(tied_features):
            return formulas.per_sample_center_loss(tied_features, centers_batch)

        if training is False:
            return tf.identity(per_sample(features), name=scope)
        if site is not None:
            updated = site.update(centers, labels, features, centers_batch,
                                  alpha, training, weights)
        else:
            updated = table.apply_update(centers, labels, features, centers_batch,
                                         alpha, training, weights)
        # The gradient waits for the update (a static batch size lets
        # TensorFlow skip the loss op in `sess.run(train_op)`), and so does
        # the loss value unless update_on="gradient".
        return tf.identity(ties.tie(per_sample, features, updated, update_on),
                           name=scope)


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


@tf.autograph.experimental.do_not_convert
def softmax_center_loss(labels, features, num_classes, alpha, lambda_,
                        batch_sum=False, name=None, centers=None, training=None,
                        sample_weight=None, update_on=None, partitioner=None):
    """`softmax_loss + lambda_ * center_loss` on logits, per sample `[batch]`.

    labels: one-hot (or soft) `[batch, num_classes]`, or class ids `[batch]`
    / `[batch, 1]` (see `class_ids`); the centers follow the argmax class.
    With `batch_sum=True` the center term is the blog's: summed over the
    batch and added to every sample, i.e. `lambda_ * sum_k 1/2||x_k - c_k||^2`.
    Since Keras averages per-sample losses, the per-sample form with
    `lambda = batch_size * lambda_blog` gives the same total loss.
    `training`, `sample_weight`, `update_on` and `partitioner` are `center_loss`'s.
    """
    with tf.compat.v1.name_scope(name, "softmax_center_loss", [labels, features]):
        labels = tf.convert_to_tensor(labels, name="labels")
        features = tf.convert_to_tensor(features, name="logits")
        checks.check_logits_width(features, num_classes, "cl.loss")
        site = sites.current()
        if sample_weight is None and site is not None:
            sample_weight = site.sample_weight
        onehot, ids = targets.softmax_targets(labels, num_classes, "cl.loss", sample_weight)
        with sites.scope(site):
            center_term = center_loss(
                ids, features, alpha=alpha, num_classes=num_classes, centers=centers,
                training=training, sample_weight=sample_weight, update_on=update_on,
                partitioner=partitioner)
        if batch_sum:
            center_term = tf.reduce_sum(center_term) * tf.ones_like(center_term)
        softmax_term = softmax_loss(onehot, features)
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
        num_classes=formulas.check_num_classes(settings.value_or_default(None, "NUM_CLASSES")),
        alpha=settings.value_or_default(None, "ALPHA"),
        lambda_=settings.value_or_default(None, "LAMBDA"),
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


def get_centers(scope=table.DEFAULT_SCOPE, graph=None):
    """The centers variable `<scope>/centers` of `graph` (default graph): a
    PartitionedVariable for a table split by rows.

    Raises:
      KeyError naming the tables that exist, if there is none under `scope`.
    """
    graph = graph or tf.compat.v1.get_default_graph()
    wanted = f"{scope}/{table.CENTERS_NAME}"
    tables = {v.name.split(":")[0]: v
              for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
              if v.name.endswith(f"{table.CENTERS_NAME}:0")}
    tables.update(table.partitioned_tables(graph))
    if wanted in tables:
        return tables[wanted]
    raise KeyError(
        f"No centers table '{wanted}:0' in this graph; tables present: "
        f"{[v.name for v in tables.values()] or 'none (build the loss first)'}.")
