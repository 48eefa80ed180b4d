"""Keras 3 (TensorFlow and JAX backends): center loss as a layer, or in a model.

`CenterLoss` is a layer holding the `[num_classes, dim]` centers as a
non-trainable float32 weight. Called on `[embedding, labels]` (optionally
`[embedding, labels, sample_weight]`) it adds `weight * mean_i 1/2 ||x_i -
c_{y_i}||^2`, from the centers as they were before this step, with
`add_loss`, applies the paper's update when `training` is true (fit,
train_on_batch; never evaluate, predict, validation or `training=False`),
and returns the embedding unchanged. Called on the embedding alone it only
passes it through, so an inference model needs no labels.

`CenterLossModel` wraps a model `x -> (logits, embedding)` so that
`fit(x, y)` takes the labels as targets only, with no dummy inputs: its
`compute_loss` adds the same term.

The math is `cl.formulas`; this module only reads and writes the table, in
a way that costs O(batch * dim) whatever num_classes is: a sparse
`tf.gather` / `scatter_sub` on TensorFlow (`keras.ops.take` on a variable
reads the whole table there), static-size `jnp.unique` and `.at[].add` on
JAX (in place under jit, where Keras donates the state).
"""

import functools
import warnings

import keras
import numpy as np

from cl import formulas

_BACKENDS = {"tensorflow": formulas.TENSORFLOW, "jax": formulas.JAX}


def _math_backend():
    name = keras.backend.backend()
    if name not in _BACKENDS:
        raise NotImplementedError(
            f"cl.keras3 supports the TensorFlow and JAX backends of Keras 3; "
            f"KERAS_BACKEND is {name!r}.")
    return _BACKENDS[name]


def _check_settings(num_classes, alpha, weight):
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"weight (lambda) must be a number >= 0; received {weight!r}.")
    return formulas.check_num_classes(num_classes), formulas.check_alpha(alpha), float(weight)


def _range_message(labels, num_classes, what):
    """The message for out-of-range `labels` (numpy), or None."""
    labels = np.asarray(labels).reshape(-1)
    bad = (labels < 0) | (labels >= num_classes)
    if not bad.any():
        return None
    hint = (" (-1: a one-hot row that names no class, all zeros or NaN; drop "
            "such samples)" if (labels == -1).any() else "")
    return (
        f"{what}: labels must be class ids in [0, num_classes={num_classes}); "
        f"received out-of-range label(s) {labels[bad][:20].tolist()} at batch "
        f"position(s) {np.flatnonzero(bad)[:20].tolist()}{hint}.")


def _raise_if_out_of_range(labels, num_classes, what):
    error = _range_message(labels, num_classes, what)
    if error is not None:
        raise ValueError(f"{error} No center was changed.")


def _warn_if_out_of_range(labels, num_classes, what):
    error = _range_message(labels, num_classes, what)
    if error is not None:
        warnings.warn(f"{error} Those samples were left out of this step's center "
                      f"update (a compiled JAX step cannot raise without losing the "
                      f"model's state).",
                      RuntimeWarning, stacklevel=2)


class _TensorFlowTable:
    """Sparse reads and writes of a Keras variable on the TensorFlow backend."""

    def __init__(self):
        import tensorflow as tf
        self.tf = tf

    def checked(self, labels, num_classes, what):
        tf = self.tf
        if tf.executing_eagerly():
            _raise_if_out_of_range(labels.numpy(), num_classes, what)
            return labels
        in_range = tf.reduce_all(tf.logical_and(labels >= 0, labels < num_classes))
        # The read and the write wait for this. XLA drops asserts: there the
        # masking in CenterLoss.term keeps bad samples away from the table.
        check = tf.debugging.Assert(
            in_range, [f"{what}: labels must be class ids in [0, num_classes={num_classes});"
                       " received labels:", labels], summarize=20)
        with tf.control_dependencies([check]):
            return tf.identity(labels)

    def read(self, variable, ids):
        # variable.value is the tf.Variable (autocast off): a ResourceGather of
        # `ids` rows. keras.ops.take would read all C rows first.
        return self.tf.gather(variable.value, ids)

    def subtract(self, variable, ids, deltas):
        variable.value.scatter_sub(self.tf.IndexedSlices(deltas, ids))


class _JaxTable:
    """Reads and writes of a Keras variable on the JAX backend (functional)."""

    def __init__(self):
        import jax
        self.jax = jax

    def checked(self, labels, num_classes, what):
        if isinstance(labels, self.jax.core.Tracer):
            # An error raised inside a compiled step would lose the model's
            # state (Keras donates it to jit): warn, and the masking in
            # CenterLoss.term keeps the bad samples away from the table.
            self.jax.debug.callback(functools.partial(
                _warn_if_out_of_range, num_classes=num_classes, what=what), labels)
        else:
            _raise_if_out_of_range(np.asarray(labels), num_classes, what)
        return labels

    def read(self, variable, ids):
        return variable.value[ids]

    def subtract(self, variable, ids, deltas):
        # Padding rows of formulas.center_update repeat a class with delta 0,
        # so add, never set. Under jit Keras donates the state: in place.
        variable.assign(variable.value.at[ids].add(-deltas))


@functools.lru_cache(maxsize=None)
def _table_ops(backend):
    return _TensorFlowTable() if backend == formulas.TENSORFLOW else _JaxTable()


def _class_ids(labels, num_classes, what):
    """int32 `[batch]` from `[batch]`/`[batch, 1]` ids or one-hot `[batch, C]`."""
    labels = keras.ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[1] == num_classes and num_classes > 1:
        # A row that names no class (all zeros or NaN, an "unlabeled"
        # marker) becomes -1, refused by the range check, never class 0.
        rows = keras.ops.cast(labels, "float32")
        names_a_class = keras.ops.logical_and(
            keras.ops.any(rows > 0, axis=-1), keras.ops.all(keras.ops.isfinite(rows), axis=-1))
        labels = keras.ops.where(names_a_class, keras.ops.argmax(rows, axis=-1), -1)
    elif len(shape) == 2 and shape[1] == 1:
        labels = keras.ops.reshape(labels, (-1,))
    elif len(shape) != 1:
        raise ValueError(
            f"{what}: labels must be class ids [batch] or [batch, 1], or one-hot "
            f"[batch, {num_classes}]; received shape {shape}.")
    return keras.ops.cast(labels, "int32")


@keras.saving.register_keras_serializable(package="cl")
class CenterLoss(keras.layers.Layer):
    """Center loss on an embedding (Wen et al., ECCV 2016), as a Keras 3 layer.

    Adds `weight * mean_i w_i * 1/2 ||x_i - c_{y_i}||^2` (w = sample weights,
    default 1) and, in training only, applies
    `c_j <- c_j - alpha * sum_{i: y_i=j} w_i (c_j - x_i) / (1 + sum w_i)`.
    NaN/Inf samples and weight-0 samples never move a center.

        embedding = keras.layers.Dense(2)(hidden)
        embedding = cl.keras3.CenterLoss(10, alpha=0.5, weight=0.01)([embedding, labels])

    Args:
      num_classes: rows of the centers table.
      alpha: center learning rate in [0, 1] (paper: 0.5).
      weight: lambda, the weight of the center term in the total loss.

    Inputs: `embedding` float `[batch, dim]` alone (pass-through), or
    `[embedding, labels]` or `[embedding, labels, sample_weight]`, labels
    int `[batch]` / `[batch, 1]` in `[0, num_classes)`, sample weights float
    `[batch]` >= 0. Output: the embedding, unchanged.

    `.centers` is the float32 `[num_classes, dim]` table (also under mixed
    precision).
    """

    def __init__(self, num_classes, alpha=0.5, weight=0.01, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.alpha, self.weight = _check_settings(num_classes, alpha, weight)
        self._backend = _math_backend()

    def build(self, input_shape):
        nested = isinstance(input_shape, (list, tuple)) and input_shape and \
            isinstance(input_shape[0], (list, tuple))
        embedding_shape = input_shape[0] if nested else input_shape
        dim = embedding_shape[-1]
        if dim is None:
            raise ValueError(
                f"{self.name}: the embedding dimension must be known (it sizes the "
                f"centers table); received shape {tuple(embedding_shape)}.")
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, dim), initializer="zeros",
            trainable=False, dtype="float32", autocast=False)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)):
            return inputs
        embedding, labels, sample_weight = (list(inputs) + [None, None])[:3]
        if labels is not None:
            self.add_loss(self.term(labels, embedding, sample_weight, training=training))
        return embedding

    def term(self, labels, embedding, sample_weight=None, training=False):
        """`weight * mean center loss` from the pre-update centers; updates
        the centers if `training` is true. What `call` and `CenterLossModel`
        use; the layer must be built."""
        what = f"CenterLoss '{self.name}'"
        table = _table_ops(self._backend)
        features = keras.ops.cast(embedding, "float32")
        if len(features.shape) != 2:
            raise ValueError(f"{what}: the embedding must have shape [batch, dim]; "
                             f"received shape {tuple(features.shape)}.")
        labels = table.checked(_class_ids(labels, self.num_classes, what), self.num_classes, what)
        # Where the check cannot raise (TensorFlow under XLA, jitted JAX), an
        # out-of-range label reads row 0 and has weight 0: it never moves a center.
        in_range = keras.ops.logical_and(labels >= 0, labels < self.num_classes)
        safe_labels = keras.ops.where(in_range, labels, keras.ops.zeros_like(labels))
        weights = keras.ops.cast(in_range, "float32")
        if sample_weight is not None:
            weights = weights * keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,))
        # One read for the loss and the update: the loss sees the pre-update centers.
        centers_batch = keras.ops.stop_gradient(table.read(self.centers, safe_labels))
        per_sample = formulas.per_sample_center_loss(features, centers_batch, self._backend)
        if sample_weight is not None:
            per_sample = per_sample * weights
        # Where the check could not raise (XLA, a jitted JAX step), the term
        # reads NaN, so the progress bar, History and TerminateOnNaN show the
        # bad batch; no gradient reaches the NaN, so the weights are unharmed.
        per_sample = keras.ops.where(in_range, per_sample, float("nan"))
        if training:
            class_ids, deltas = formulas.center_update(
                safe_labels, keras.ops.stop_gradient(features), centers_batch, self.alpha,
                weights, self._backend)
            table.subtract(self.centers, class_ids, deltas)
        return self.weight * keras.ops.mean(per_sample)

    def compute_output_shape(self, input_shape):
        nested = isinstance(input_shape, (list, tuple)) and input_shape and \
            isinstance(input_shape[0], (list, tuple))
        return input_shape[0] if nested else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, alpha=self.alpha, weight=self.weight)
        return config


@keras.saving.register_keras_serializable(package="cl")
class CenterLossModel(keras.Model):
    """`fit(x, y)` with center loss and the labels as targets only.

    Wraps `backbone`, a model `x -> (logits, embedding)`. The compiled loss
    and metrics see the logits; `compute_loss` adds the center term of its
    `CenterLoss` layer (`.center_loss`, table `.centers`), whose update runs
    in training steps only. `predict(x)` returns `(logits, embedding)`.

        backbone = keras.Model(inputs, [logits, embedding])
        model = cl.keras3.CenterLossModel(backbone, num_classes=10, weight=0.01)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y)
    """

    def __init__(self, backbone, num_classes, alpha=0.5, weight=0.01, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.center_loss = CenterLoss(num_classes, alpha, weight, name="center_loss")
        outputs = getattr(backbone, "outputs", None)
        if outputs:
            if len(outputs) != 2:
                raise ValueError(
                    f"CenterLossModel: backbone must output (logits, embedding); "
                    f"it has {len(outputs)} output(s).")
            self.center_loss.build(tuple(outputs[1].shape))

    @property
    def centers(self):
        return self.center_loss.centers

    def build(self, input_shape):
        if not self.center_loss.built:
            embedding_shape = self.backbone.compute_output_shape(input_shape)[1]
            self.center_loss.build(tuple(embedding_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.backbone(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, embedding = y_pred
        loss = super().compute_loss(x, y, logits, sample_weight, training=training)
        return loss + self.center_loss.term(y, embedding, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[0], sample_weight)

    def get_config(self):
        config = super().get_config()
        layer = self.center_loss
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      num_classes=layer.num_classes, alpha=layer.alpha, weight=layer.weight)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        return cls(**config)
