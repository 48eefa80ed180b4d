"""Keras 2 loss classes: settings and config only; the ops do the work."""

import weakref

import tensorflow as tf

from cl import compat, formulas, ops
from cl.graph import shards, sites, targets
from cl.graph import table as graph_table

keras = compat.keras_module()


class _CentersOwner(keras.losses.Loss):
    """Shared by the loss classes: settings, config, the table they use."""

    def __init__(self, num_classes, alpha, name, partitioner=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = formulas.check_num_classes(num_classes)
        self.alpha = formulas.check_alpha(alpha)
        if not (partitioner is None or callable(partitioner) or (
                isinstance(partitioner, int) and not isinstance(partitioner, bool)
                and partitioner >= 1)):
            raise TypeError(
                f"{name}: partitioner must be a number of shards (an int >= 1) or a "
                f"TF1 partitioner such as tf.compat.v1.fixed_size_partitioner(4); "
                f"received {partitioner!r}.")
        self.partitioner = partitioner
        # Per graph: the table this loss last used (a model's, under Keras
        # compile; its own otherwise).
        self._tables = weakref.WeakKeyDictionary()

    @property
    def centers(self):
        """The centers variable this loss used last in the current graph."""
        table = self._tables.get(tf.compat.v1.get_default_graph())
        if table is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no centers in this graph "
                f"yet: they are created when the loss is first called (compile).")
        return table

    def table(self, features, site):
        """The table this call uses: the compiling model's (`site`, the
        compile building this loss) for this loss's name, or, outside Keras
        compile (`site` None), this instance's own."""
        graph = tf.compat.v1.get_default_graph()
        dim = tf.compat.dimension_value(features.shape[-1])
        if dim is None:
            raise ValueError(
                f"{self.name}: the feature dimension must be known; received "
                f"shape {features.shape}.")
        partitioner = shards.partitioner_of(self.partitioner)
        if site is not None:
            table = site.table(self.num_classes, dim, self.name, partitioner)
        else:
            table = graph_table.centers_variable(self.num_classes, dim, scope=self.name,
                                         owner=(type(self).__name__, self._owner_token),
                                         partitioner=partitioner)
        self._tables[graph] = table
        return table

    @property
    def _owner_token(self):
        # A token object, never id(self): ids of freed objects are reused.
        return self.__dict__.setdefault("_cl_owner", object())

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, alpha=self.alpha)
        if isinstance(self.partitioner, int):  # a callable is not serialisable
            config.update(partitioner=self.partitioner)
        return config


@keras.utils.register_keras_serializable(package="cl")
class CenterLoss(_CentersOwner):
    """Center loss on an embedding output, as the paper applies it.

    `L_C,i = 1/2 ||x_i - c_{y_i}||^2` per sample, with the paper's center
    update run by every training step (see `cl.center_loss`). Use it on the
    embedding output of a two-output model, with λ as its loss weight:

        model.compile(optimizer="adam",
                      loss={"logits": cl.SparseSoftmaxLoss(),
                            "embedding": cl.CenterLoss(num_classes=10)},
                      loss_weights={"logits": 1.0, "embedding": 0.01})
        model.fit(x, {"logits": y, "embedding": y})

    The table belongs to the model and is named after the loss: recompiling
    with a CenterLoss of the same name and shape keeps the trained centers.
    One CenterLoss on several outputs (a siamese model) updates its table
    once per step, on all those outputs' samples as one batch.

    Args:
      num_classes: rows of the centers table.
      alpha: center learning rate in [0, 1] (paper: 0.5).
      name: loss name, and variable scope of its table (`<name>/centers`).
      partitioner: split the table by rows over this many shards (an int,
        kept in the config), or by a TF1 partitioner; default: the variable
        scope's, if any. See `cl.center_loss`.

    y_true: class ids `[batch]`/`[batch, 1]` or one-hot `[batch, num_classes]`.
    y_pred: float `[batch, dim]` embedding. Returns `[batch]`, float32.
    """

    def __init__(self, num_classes, alpha=0.5, name="center_loss", partitioner=None, **kwargs):
        super().__init__(num_classes, alpha, name, partitioner, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        with sites.scope(sites.current()) as site:  # found once per build
            sample_weight = None if site is None else site.sample_weight
            return ops.center_loss(
                targets.class_ids(y_true, self.num_classes, self.name, sample_weight), y_pred,
                alpha=self.alpha, num_classes=self.num_classes, name=self.name,
                centers=self.table(y_pred, site), sample_weight=sample_weight)


@keras.utils.register_keras_serializable(package="cl")
class SoftmaxCenterLoss(_CentersOwner):
    """The blog's combined loss on logits, with its own settings and table.

    `softmax_cross_entropy + lambda_ * center_loss`, centers on the logits
    (`[num_classes, num_classes]`). With `batch_sum=True` the center term is
    the blog's batch sum added to every sample: the same values as the blog's
    `cl.loss`, for λ tuned against it. Equivalently keep `batch_sum=False`
    and use `lambda_ = batch_size * λ_blog`.

    y_true: one-hot (or soft) `[batch, num_classes]`, or class ids. y_pred: logits.
    """

    def __init__(self, num_classes, alpha=0.5, lambda_=0.003, batch_sum=False,
                 name="softmax_center_loss", partitioner=None, **kwargs):
        super().__init__(num_classes, alpha, name, partitioner, **kwargs)
        self.lambda_ = float(lambda_)
        self.batch_sum = bool(batch_sum)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        logits = tf.convert_to_tensor(y_pred)
        with sites.scope(sites.current()) as site:  # found once per build
            return ops.softmax_center_loss(
                y_true, logits, num_classes=self.num_classes, alpha=self.alpha,
                lambda_=self.lambda_, batch_sum=self.batch_sum, name=self.name,
                centers=self.table(logits, site),
                sample_weight=None if site is None else site.sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(lambda_=self.lambda_, batch_sum=self.batch_sum)
        return config


@keras.utils.register_keras_serializable(package="cl")
class SparseSoftmaxLoss(keras.losses.Loss):
    """Softmax cross-entropy from logits, for sparse, one-hot or soft labels.

    The softmax half of a two-output model: it takes the same labels as
    `CenterLoss`, so one `y` feeds both outputs. One-hot rows are used as
    given, so label smoothing is kept (like Keras's CategoricalCrossentropy);
    labels get the same checks as the center loss's, and a batch that fails
    them updates no weight.
    """

    def __init__(self, name="softmax_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        logits = tf.convert_to_tensor(y_pred)
        width = tf.compat.dimension_value(logits.shape[-1])
        if width is None:
            raise ValueError(f"{self.name}: the logits' width (number of classes) "
                             f"must be known; received shape {logits.shape}.")
        site = sites.current()
        onehot, _ = targets.softmax_targets(y_true, width, self.name,
                                            None if site is None else site.sample_weight)
        return ops.softmax_loss(onehot, logits)
