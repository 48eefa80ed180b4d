"""Keras 3 (TensorFlow, JAX and PyTorch backends): center loss as a layer, or in a model.

`CenterLoss` holds the `[num_classes, dim]` centers (a non-trainable float32
weight). Called on `[embedding, labels]` (or `[embedding, labels,
sample_weight]`) it adds the center term from the pre-update centers with
`add_loss`, applies the paper's update in training steps only (never
evaluate, predict, validation or `training=False`), and returns the
embedding as given; on the embedding alone it only passes it through.
`CenterLossModel` wraps a model `x -> (logits, embedding)` so that
`fit(x, y)` takes the labels as targets only: its `compute_loss` adds the term.

The math is `cl.formulas`; the sparse table reads and writes, the checks on
labels and weights, and what a layer learns about the Keras step it runs in
(fit's sample weights, which step) are `cl.keras3_backends`.
"""

import keras

from cl import formulas, keras3_metrics, rules
from cl.keras3_backends import (
    StepMemo,
    class_ids,
    keras_step,
    math_backend,
    replica_share,
    sample_weights,
    step_token,
    table_ops,
)


def _first(inputs):
    """The embedding (its shape, or a tensor): `inputs`, or the first of them."""
    nested = isinstance(inputs, (list, tuple)) and inputs and \
        not isinstance(inputs[0], (int, type(None)))
    return inputs[0] if nested else inputs


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
      center_metrics: if true, `center_distance` and `center_ratio` (those
        of `cl.center_metrics`, from the pre-update centers) show in the
        progress bar, `History` and `evaluate` of labelled steps.

    Inputs: `embedding` float `[batch, dim]` alone (pass-through), or
    `[embedding, labels]` or `[embedding, labels, sample_weight]`, labels
    int `[batch]` / `[batch, 1]` in `[0, num_classes)`, sample weights float
    `[batch]` >= 0. Output: the embedding, unchanged (dtype too: the layer
    does not autocast, and computes the term and the update in float32 from
    the embedding as given, also under a mixed policy).

    `.centers` is the float32 `[num_classes, dim]` table (also under mixed
    precision). Under gradient accumulation the centers follow the rule on
    every batch (as BatchNormalization's statistics do), the weights every k.
    """

    def __init__(self, num_classes, alpha=0.5, weight=0.01, center_metrics=False, **kwargs):
        # Keras would cast a float embedding to a mixed policy's compute dtype
        # (16 bits) before `call`: the update would start from rounded values.
        if kwargs.pop("autocast", False):
            raise ValueError("CenterLoss uses its embedding as given: autocast=True is refused.")
        super().__init__(autocast=False, **kwargs)
        self.num_classes = formulas.check_num_classes(num_classes)
        self.alpha, self.weight = formulas.check_alpha(alpha), formulas.check_weight(weight)
        self.center_metrics = bool(center_metrics)
        self._center_metric = keras3_metrics.CenterMetric() if center_metrics else None
        self._backend = math_backend()
        self._last_step = StepMemo()
        self._labelled_node = False

    def __call__(self, inputs, *args, **kwargs):
        labelled = isinstance(inputs, (list, tuple)) and len(inputs) > 1
        if labelled and any(isinstance(t, keras.KerasTensor) for t in inputs):
            # Building a functional model: a second labelled call would mean
            # two updates per step, the second from moved centers.
            if self._labelled_node:
                raise ValueError(rules.SECOND_CALL.format(what=self._what, where="in a model"))
            self._labelled_node = True
        return super().__call__(inputs, *args, **kwargs)

    @property
    def _what(self):
        return f"CenterLoss '{self.name}'"

    def build(self, input_shape):
        table_ops(self._backend).refuse_strategy(self._what)
        embedding_shape = _first(input_shape)
        dim = embedding_shape[-1]
        if dim is None:
            raise ValueError(
                f"{self.name}: the embedding dimension must be known (it sizes the "
                f"centers table); received shape {tuple(embedding_shape)}.")
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, dim), initializer="zeros",
            trainable=False, dtype="float32", autocast=False,
            **table_ops(self._backend).table_options())

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)):
            return inputs
        embedding, labels, sample_weight = (list(inputs) + [None, None])[:3]
        if labels is None:
            return embedding
        weights = sample_weights(sample_weight, self._what, "the third input")
        # fit's sample_weight / class_weight: Keras hands them to the model's
        # step only; they weight this term and its update as they weight the
        # compiled loss (CenterLossModel gets them from compute_loss).
        model, fit_weights = keras_step()
        if model is None:
            table_ops(self._backend).require_visible_step()
        fit_weights = sample_weights(fit_weights, self._what, "fit's sample_weight")
        if fit_weights is not None:
            weights = fit_weights if weights is None else weights * fit_weights
        loss, embedding, check = self._term(labels, embedding, weights, training)
        self.add_loss(loss)
        # On TensorFlow without XLA what follows waits for the label check (the
        # output, loss, gradients), and so do the optimizer's variables (not
        # `iterations`, a tensor under gradient accumulation): a refused step changes nothing.
        if check is not None and getattr(model, "optimizer", None) is not None:
            table_ops(self._backend).hold(check, model.optimizer.variables)
        return embedding

    def term(self, labels, embedding, sample_weight=None, training=False):
        """`weight * mean center loss` from the pre-update centers; updates
        the centers if `training` is true and the layer is trainable. What
        `call` and `CenterLossModel` use; the layer must be built."""
        weights = sample_weights(sample_weight, self._what, "sample_weight")
        return self._term(labels, embedding, weights, training)[0]

    def _checked(self, labels, weights):
        """`(ids, ok, check)`: class ids, whether each sample's label and
        weight are valid, and the check (raises now where the backend can,
        else an assert op on TensorFlow graphs, else None)."""
        ids, shown, ok = class_ids(labels, self.num_classes, self._what)
        if weights is not None:
            ok = keras.ops.logical_and(ok, rules.valid_weights(weights, self._backend))
        check = table_ops(self._backend).check(ok, shown, weights, self.num_classes, self._what)
        return ids, ok, check

    def _term(self, labels, embedding, weights, training):
        """`(loss, embedding, check)`: loss and embedding computed only once
        the labels and weights passed `check` (TensorFlow graphs; else None)."""
        what = self._what
        table = table_ops(self._backend)
        table.refuse_strategy(what)
        # Without training both calls read the same centers: nothing to refuse.
        if training and self._last_step.seen(step_token()):
            table.undo(self.centers)  # eager (torch): the first call's update
            raise ValueError(rules.SECOND_CALL.format(what=self._what, where="in one step"))
        features = keras.ops.cast(embedding, "float32")
        if len(features.shape) != 2:
            raise ValueError(f"{what}: the embedding must have shape [batch, dim]; "
                             f"received shape {tuple(features.shape)}.")
        ids, ok, check = self._checked(labels, weights)
        ids = table.after(check, ids)
        # Where the check cannot raise (XLA, a Keras step on JAX) a bad sample
        # reads row 0 and has weight 0: it never moves a center.
        keep = keras.ops.cast(ok, "float32")
        weights = keep if weights is None else keep * keras.ops.where(ok, weights, 0.0)
        # The loss sees the pre-update centers. Frozen (layer or model
        # trainable=False) centers stay put, as BatchNormalization's statistics do.
        per_sample, centers_batch = table.term(self.centers, ids, features, self.alpha,
                                               weights, bool(training and self.trainable), what)
        if self._center_metric is not None:
            keras3_metrics.record(self._center_metric, self, keras_step(False)[0], ids, ok,
                                  features, centers_batch, weights)
        per_sample = per_sample * weights
        # There the term also reads NaN, so the progress bar, History and
        # TerminateOnNaN show the bad batch; no gradient reaches the NaN.
        per_sample = keras.ops.where(ok, per_sample, float("nan"))
        return (table.after(check, self.weight * keras.ops.mean(per_sample)),
                table.after(check, embedding), check)

    def compute_output_spec(self, inputs, training=None):
        # The embedding as given, dtype too (Keras's default: compute_dtype).
        embedding = _first(inputs)
        return keras.KerasTensor(embedding.shape, dtype=embedding.dtype)

    def compute_output_shape(self, input_shape):
        return _first(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, alpha=self.alpha, weight=self.weight,
                      center_metrics=self.center_metrics)
        return config


def _pair(outputs):
    """`outputs` if it is (logits, embedding), else a ValueError naming what it is."""
    if isinstance(outputs, (list, tuple)) and len(outputs) == 2:
        return outputs
    shapes = keras.tree.map_structure(lambda t: tuple(getattr(t, "shape", ())), outputs)
    got = (f"one tensor of shape {shapes}" if hasattr(outputs, "shape") else
           f"{len(outputs)} outputs of shapes {list(shapes)}" if isinstance(outputs, (list, tuple))
           else f"{type(outputs).__name__} of shapes {shapes}")
    raise ValueError(rules.BACKBONE_OUTPUTS.format(got=got))


@keras.saving.register_keras_serializable(package="cl")
class CenterLossModel(keras.Model):
    """`fit(x, y)` with center loss and the labels as targets only.

    Wraps `backbone`, a model `x -> (logits, embedding)`. The compiled loss
    and metrics see the logits; `compute_loss` adds the center term of its
    `CenterLoss` layer (`.center_loss`, table `.centers`), whose update runs
    in training steps only. `predict(x)` returns `(logits, embedding)`.
    `center_metrics=True` logs `center_distance` and `center_ratio`.

        backbone = keras.Model(inputs, [logits, embedding])
        model = cl.keras3.CenterLossModel(backbone, num_classes=10, weight=0.01)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y)
    """

    def __init__(self, backbone, num_classes, alpha=0.5, weight=0.01, center_metrics=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.center_loss = CenterLoss(num_classes, alpha, weight, center_metrics,
                                      name="center_loss")
        outputs = getattr(backbone, "outputs", None)
        if outputs:  # functional, or a built Sequential
            outputs = _pair(outputs[0] if len(outputs) == 1 else outputs)
            self.center_loss.build(tuple(outputs[1].shape))

    @property
    def centers(self):
        return self.center_loss.centers

    def build(self, input_shape):
        if not self.center_loss.built:
            # A subclassed backbone has no outputs to read the dimension from,
            # nor, often, compute_output_shape: a symbolic call builds it and
            # gives the embedding's shape.
            embedding = _pair(self.backbone(keras.tree.map_shape_structure(
                keras.KerasTensor, input_shape)))[1]
            self.center_loss.build(tuple(embedding.shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.backbone(inputs, training=training)

    def train_step(self, *args):
        if keras.backend.backend() in ("tensorflow", "torch"):
            # Check the labels (and weights) before the step: eager (TF, torch),
            # an error now; in a graph, every write of the step (weights,
            # statistics, optimizer, metrics) waits for the check, so a refused
            # step changes nothing. The centers' writes wait for it anyway (their
            # ids do), and a dense read of the table is what we must avoid.
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(args[0])
            if not self.built:  # Keras on TensorFlow builds in the first step
                self.build(keras.tree.map_structure(lambda t: tuple(t.shape), x))
            layer = self.center_loss
            check = layer._checked(y, sample_weights(sample_weight, layer._what,
                                                      "sample_weight"))[2]
            table_ops(layer._backend).hold(check, [
                v for v in self.variables + self.optimizer.variables + self.metrics_variables
                if v is not layer.centers])
        return super().train_step(*args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, embedding = _pair(y_pred)
        loss = super().compute_loss(x, y, logits, sample_weight, training=training)
        # Scaled per replica as Keras scales the compiled loss (tf.distribute).
        return loss + replica_share(self.center_loss.term(y, embedding, sample_weight,
                                                          training=training))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[0], sample_weight)

    def get_config(self):
        config = super().get_config()
        layer = self.center_loss
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      num_classes=layer.num_classes, alpha=layer.alpha, weight=layer.weight,
                      center_metrics=layer.center_metrics)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        return cls(**config)
