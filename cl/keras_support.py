"""Keras 2 integration: loss classes, the compile helper, metrics, checkpoints.

Targets legacy Keras 2 in graph mode (tf_keras, or tf.keras on TF 2.15); see
`cl.compat`. The math stays in `cl.formulas`, the graph ops in `cl.ops`.
"""

import os
import warnings
import weakref

import numpy as np
import tensorflow as tf

from cl import compat, ops

keras = compat.keras_module()

H5_GROUP = "cl_centers"


# --- labels ---------------------------------------------------------------

def class_ids(y_true, num_classes, what):
    """Sparse `[batch]` int64 class ids from sparse or one-hot Keras targets.

    Accepts `[batch]`, `[batch, 1]` (ints, or the floats Keras feeds) or
    one-hot `[batch, num_classes]`. Keras target placeholders often have an
    unknown last dimension, so the choice is made at run time when needed.
    """
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 1:
        return _whole_numbers(y_true, what)
    if y_true.shape.rank != 2:
        raise ValueError(
            f"{what}: labels must be class ids [batch] or [batch, 1], or one-hot "
            f"[batch, {num_classes}]; received shape {y_true.shape}.")
    width = tf.compat.dimension_value(y_true.shape[1])
    if width == 1:
        return _whole_numbers(y_true[:, 0], what)
    if width == num_classes:
        return tf.argmax(y_true, axis=-1)
    if width is not None:
        raise ValueError(
            f"{what}: labels must be class ids [batch] or [batch, 1], or one-hot "
            f"[batch, {num_classes}]; received shape {y_true.shape}.")
    runtime_width = tf.shape(y_true)[1]
    check = tf.compat.v1.Assert(
        tf.logical_or(tf.equal(runtime_width, 1), tf.equal(runtime_width, num_classes)),
        [f"{what}: labels must be class ids [batch, 1] or one-hot [batch, "
         f"{num_classes}]; received shape", tf.shape(y_true)])
    with tf.control_dependencies([check]):
        return tf.cond(tf.equal(runtime_width, 1),
                       lambda: _whole_numbers(y_true[:, 0], what),
                       lambda: tf.argmax(y_true, axis=-1))


def _whole_numbers(labels, what):
    if labels.dtype.is_integer:
        return tf.cast(labels, tf.int64)
    check = tf.compat.v1.Assert(
        tf.reduce_all(tf.equal(labels, tf.round(labels))),
        [f"{what}: class ids must be whole numbers; received", labels], summarize=20)
    with tf.control_dependencies([check]):
        return tf.cast(labels, tf.int64)


# --- loss classes -----------------------------------------------------------

class _CentersOwner(keras.losses.Loss):
    """Shared by the loss classes: settings, config, one table per graph."""

    def __init__(self, num_classes, alpha, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = ops.check_num_classes(num_classes)
        self.alpha = ops.check_alpha(alpha)
        self._tables = weakref.WeakKeyDictionary()

    @property
    def centers(self):
        """The centers variable of the current graph (after the first call)."""
        table = self._tables.get(tf.compat.v1.get_default_graph())
        if table is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no centers in this graph "
                f"yet: they are created when the loss is first called (compile).")
        return table

    def _table(self, features):
        graph = tf.compat.v1.get_default_graph()
        if graph not in self._tables:
            dim = tf.compat.dimension_value(features.shape[-1])
            if dim is None:
                raise ValueError(
                    f"{self.name}: the feature dimension must be known; received "
                    f"shape {features.shape}.")
            self._tables[graph] = ops.centers_variable(
                self.num_classes, dim, scope=self.name, owner=("instance", id(self)))
        return self._tables[graph]

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, alpha=self.alpha)
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

    Args:
      num_classes: rows of the centers table.
      alpha: center learning rate in [0, 1] (paper: 0.5).
      name: loss name, and variable scope of its table (`<name>/centers`).

    y_true: class ids `[batch]`/`[batch, 1]` or one-hot `[batch, num_classes]`.
    y_pred: float `[batch, dim]` embedding. Returns `[batch]`, float32.
    """

    def __init__(self, num_classes, alpha=0.5, name="center_loss", **kwargs):
        super().__init__(num_classes, alpha, name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        return ops.center_loss(
            class_ids(y_true, self.num_classes, self.name), y_pred,
            alpha=self.alpha, num_classes=self.num_classes, name=self.name,
            centers=self._table(y_pred))


@keras.utils.register_keras_serializable(package="cl")
class SoftmaxCenterLoss(_CentersOwner):
    """The blog's combined loss on logits, with its own settings and table.

    `softmax_cross_entropy + lambda_ * center_loss`, centers on the logits
    (`[num_classes, num_classes]`). With `batch_sum=True` the center term is
    the blog's batch sum added to every sample: the same values as the blog's
    `cl.loss`, for λ tuned against it. Equivalently keep `batch_sum=False`
    and use `lambda_ = batch_size * λ_blog`.

    y_true: one-hot `[batch, num_classes]` or class ids. y_pred: logits.
    """

    def __init__(self, num_classes, alpha=0.5, lambda_=0.003, batch_sum=False,
                 name="softmax_center_loss", **kwargs):
        super().__init__(num_classes, alpha, name, **kwargs)
        self.lambda_ = float(lambda_)
        self.batch_sum = bool(batch_sum)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        logits = tf.convert_to_tensor(y_pred)
        onehot = tf.one_hot(class_ids(y_true, self.num_classes, self.name),
                            self.num_classes)
        return ops.softmax_center_loss(
            onehot, logits, num_classes=self.num_classes, alpha=self.alpha,
            lambda_=self.lambda_, batch_sum=self.batch_sum, name=self.name,
            centers=self._table(logits))

    def get_config(self):
        config = super().get_config()
        config.update(lambda_=self.lambda_, batch_sum=self.batch_sum)
        return config


@keras.utils.register_keras_serializable(package="cl")
class SparseSoftmaxLoss(keras.losses.Loss):
    """Softmax cross-entropy from logits, for sparse or one-hot labels.

    The softmax half of a two-output model: it takes the same labels as
    `CenterLoss`, so one `y` feeds both outputs.
    """

    def __init__(self, name="softmax_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def call(self, y_true, y_pred):
        logits = tf.convert_to_tensor(y_pred)
        width = tf.compat.dimension_value(logits.shape[-1])
        return ops.softmax_loss(
            tf.one_hot(class_ids(y_true, width, self.name), width), logits)


# --- metrics ----------------------------------------------------------------

@tf.autograph.experimental.do_not_convert
def accuracy(y_true, y_pred):
    """Accuracy on logits for sparse `[batch]`/`[batch, 1]` or one-hot labels.

    Keras's string 'accuracy' guesses the label format from the loss; for
    cl's losses it guesses one-hot, which reads ~0 with sparse labels.
    `cl.compile_model` replaces 'accuracy'/'acc' with this.
    """
    logits = tf.convert_to_tensor(y_pred)
    labels = class_ids(y_true, tf.compat.dimension_value(logits.shape[-1]), "cl.accuracy")
    return tf.cast(tf.equal(labels, tf.argmax(logits, axis=-1)), tf.float32)


def center_metrics(loss=None):
    """Per-batch Keras metrics for the table of `loss` (default: `cl.loss`'s).

    Returns `[center_distance, center_ratio]`, metric functions for the
    output the loss is on:
      center_distance: mean ||x_i - c_{y_i}|| over the batch.
      center_ratio: center_distance / mean distance between the centers of
        the classes in the batch (O(B^2 D), independent of num_classes).
        0 while those centers coincide (at the start, all are zero).
    Both read the centers with the batch's labels; they never update them.
    """
    def parts(y_true, y_pred):
        # Keras builds metrics before losses, so this may create the table
        # that the loss then finds (same owner, same scope).
        y_pred = tf.convert_to_tensor(y_pred)
        if loss is None:
            classes = ops.check_num_classes(ops._package_default(None, "NUM_CLASSES"))
            table = ops.centers_variable(classes, tf.compat.dimension_value(y_pred.shape[-1]),
                                         owner=ops.owner_of(compat.keras_model_being_compiled()))
        else:
            classes, table = loss.num_classes, loss._table(y_pred)
        labels = class_ids(y_true, classes, "center metrics")
        features = tf.cast(y_pred, tf.float32)
        centers_batch = tf.gather(table, labels)
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


# --- model: attach, initialise, checkpoints ---------------------------------

def centers_of(model):
    """The centers variables cl attached to `model`, in creation order."""
    return list(getattr(model, "_cl_centers", []))


def attach_centers(model, centers):
    """Makes `centers` part of `model`: initialised by Keras, in its checkpoints.

    Called when Keras compile builds a cl loss. Tracks the table as a
    checkpoint dependency (TF-format save_weights, ModelCheckpoint,
    tf.train.Checkpoint) without adding it to `model.weights` (HDF5 loading
    is order-based and would break for a model loaded before compile), and
    wraps the model's HDF5 save/load so `.h5` files carry the centers too.
    """
    tables = model.__dict__.setdefault("_cl_centers", [])
    if any(table is centers for table in tables):
        return
    tables.append(centers)
    name = "cl_centers" if len(tables) == 1 else f"cl_centers_{len(tables) - 1}"
    model._track_trackable(centers, name=name, overwrite=True)
    # Keras initialises the variables it tracks, if still uninitialised, the
    # next time it takes its session (fit, evaluate, predict): no session
    # run in the middle of compile, and loaded weights are never wiped.
    compat.keras_backend(model).track_variable(centers)
    _wrap_saving(model)


def _initialise_missing(model, variables):
    """Initialises those of `variables` not yet initialised, in Keras's session.

    Never runs global_variables_initializer: that wipes loaded weights.
    """
    session = compat.keras_backend(model).get_session()
    flags = session.run([tf.compat.v1.is_variable_initialized(v) for v in variables])
    missing = [v for v, ready in zip(variables, flags) if not ready]
    if missing:
        session.run(tf.compat.v1.variables_initializer(missing))


def initialize(model):
    """Initialises the cl centers of a compiled `model` that are uninitialised."""
    _initialise_missing(model, centers_of(model))


def compile_model(model, optimizer, loss=None, metrics=None, **compile_kwargs):
    """Compiles `model`, then initialises what the loss created, and returns it.

    loss defaults to `cl.loss`. The metric strings 'accuracy'/'acc' become
    `cl.accuracy`, which reads sparse and one-hot labels alike. Only still-uninitialised variables are
    initialised, in the session Keras uses, so weights loaded or set before
    are kept (the blog's global_variables_initializer wipes them).
    """
    compat.check_keras_model(model)
    _check_optimizer(optimizer)
    model.compile(optimizer=optimizer, loss=loss if loss is not None else ops.loss,
                  metrics=_own_accuracy(metrics), **compile_kwargs)
    if not centers_of(model):
        warnings.warn("cl.compile_model: the model's loss created no cl centers; "
                      "is a cl loss among its losses?", stacklevel=2)
    initialize(model)
    return model


def _own_accuracy(metrics):
    """`metrics` with 'accuracy'/'acc' replaced by `accuracy` (see there)."""
    if isinstance(metrics, dict):
        return {output: _own_accuracy(value) for output, value in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [_own_accuracy(metric) for metric in metrics]
    return accuracy if metrics in ("accuracy", "acc") else metrics


def _check_optimizer(optimizer):
    legacy = getattr(keras.optimizers, "legacy", None)
    base = getattr(getattr(keras.optimizers, "Optimizer", None), "__mro__", ())
    new_style = any(cls.__name__ == "_BaseOptimizer" for cls in base)
    if (new_style and isinstance(optimizer, keras.optimizers.Optimizer)
            and not (legacy and isinstance(optimizer, legacy.Optimizer))):
        cls = type(optimizer).__name__
        raise TypeError(
            f"cl.compile_model: {cls} is a new-style Keras optimizer, which does "
            f"not run in graph mode. Pass the legacy one, e.g. "
            f"{keras.__name__}.optimizers.legacy.{cls}(learning_rate=..., "
            f"decay=...) (the blog's Adam(lr=..., decay=...) becomes "
            f"optimizers.legacy.Adam(learning_rate=..., decay=...)), or a "
            f"string such as 'adam'.")


# --- HDF5 routes ----------------------------------------------------------

def _is_h5(filepath, save_format=None):
    return save_format in ("h5", "hdf5") or str(filepath).endswith((".h5", ".hdf5"))


def save_centers(model, filepath):
    """Appends the model's centers to an HDF5 file (group `cl_centers`)."""
    import h5py
    session = compat.keras_backend(model).get_session()
    values = session.run(centers_of(model))
    with h5py.File(filepath, "a") as f:
        if H5_GROUP in f:
            del f[H5_GROUP]
        group = f.create_group(H5_GROUP)
        for index, (table, value) in enumerate(zip(centers_of(model), values)):
            dataset = group.create_dataset(str(index), data=value)
            dataset.attrs["name"] = table.name


def load_centers(model, filepath):
    """Restores centers saved by `save_centers` into the model's tables.

    Tables are matched by creation order; shapes must agree.
    """
    import h5py
    tables = centers_of(model)
    with h5py.File(filepath, "r") as f:
        if H5_GROUP not in f:
            raise ValueError(
                f"{filepath} holds no cl centers (no '{H5_GROUP}' group); it was "
                f"not saved by cl.save_model or a cl-compiled model's save_weights.")
        values = [np.asarray(f[H5_GROUP][str(i)]) for i in range(len(f[H5_GROUP]))]
    if len(values) != len(tables):
        raise ValueError(
            f"{filepath} holds {len(values)} centers table(s); the model has "
            f"{len(tables)}. Compile the model with its cl loss before loading.")
    for table, value in zip(tables, values):
        if tuple(table.shape.as_list()) != value.shape:
            raise ValueError(f"Saved centers of shape {value.shape} do not fit "
                             f"'{table.name}' {table.shape}.")
    compat.keras_backend(model).batch_set_value(list(zip(tables, values)))


def _wrap_saving(model):
    """HDF5 save_weights/load_weights/save carry the centers; others warn."""
    if "_cl_saving_wrapped" in model.__dict__:
        return
    model.__dict__["_cl_saving_wrapped"] = True
    save_weights, load_weights, save = model.save_weights, model.load_weights, model.save

    def save_weights_with_centers(filepath, *args, **kwargs):
        result = save_weights(filepath, *args, **kwargs)
        if _is_h5(filepath, kwargs.get("save_format")):
            save_centers(model, filepath)
        return result

    def load_weights_with_centers(filepath, *args, **kwargs):
        result = load_weights(filepath, *args, **kwargs)
        if _is_h5(filepath) and os.path.exists(filepath):
            load_centers(model, filepath)
        return result

    def save_with_centers(filepath, *args, **kwargs):
        result = save(filepath, *args, **kwargs)
        if _is_h5(filepath, kwargs.get("save_format")):
            save_centers(model, filepath)
        else:
            warnings.warn(
                "cl: a model saved in this format comes back from load_model "
                "with zero centers in graph mode. Use cl.save_model(model, "
                "'model.h5') and cl.load_model('model.h5'), or save_weights.",
                stacklevel=2)
        return result

    for name, method in (("save_weights", save_weights_with_centers),
                         ("load_weights", load_weights_with_centers),
                         ("save", save_with_centers)):
        object.__setattr__(model, name, method)


def custom_objects():
    """What `load_model` needs for models compiled with cl's losses/metrics."""
    return {
        "loss": ops.loss, "categorical_accuracy": ops.categorical_accuracy, "accuracy": accuracy,
        "CenterLoss": CenterLoss, "SoftmaxCenterLoss": SoftmaxCenterLoss,
        "SparseSoftmaxLoss": SparseSoftmaxLoss,
        "center_distance": center_metrics()[0], "center_ratio": center_metrics()[1],
    }


def save_model(model, filepath):
    """`model.save` to HDF5, with the centers in the same file."""
    if not str(filepath).endswith((".h5", ".hdf5")):
        raise ValueError(f"cl.save_model writes HDF5; give a .h5 path, received {filepath!r}.")
    model.save(filepath)
    save_centers(model, filepath)


def load_model(filepath, custom_objects=None, compile=True):
    """`load_model` for a file from `cl.save_model`, centers restored."""
    objects = dict(globals()["custom_objects"]())
    objects.update(custom_objects or {})
    model = keras.models.load_model(filepath, custom_objects=objects, compile=compile)
    if compile:
        load_centers(model, filepath)
    return model
