"""`cl.keras3.CenterLoss`: center loss as a Keras 3 layer (TensorFlow, JAX,
PyTorch).

Called on `[embedding, labels]` (or `[embedding, labels, sample_weight]`)
it adds the center term from the pre-update centers with `add_loss`,
applies the paper's update in training steps only (never evaluate,
predict, validation or `training=False`), and returns the embedding as
given; on the embedding alone it only passes it through.

The math is `cl.formulas`; the labels and weights are `cl.keras3.labels`';
the table's reads, writes and checks are the running backend's
`cl.keras3.table.Table`; what the layer learns about the Keras step it
runs in (fit's sample weights, which step) is `cl.keras3.step`.
"""

import keras

from cl import formulas, rules
from cl.keras3 import metrics, step
from cl.keras3.backends import math_backend, table_for
from cl.keras3.labels import sample_weights


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
            raise ValueError(rules.AUTOCAST)
        super().__init__(autocast=False, **kwargs)
        self.num_classes = formulas.check_num_classes(num_classes)
        self.alpha, self.weight = formulas.check_alpha(alpha), formulas.check_weight(weight)
        self.center_metrics = bool(center_metrics)
        self._center_metric = metrics.CenterMetric() if center_metrics else None
        self._table = table_for(math_backend())
        self._last_step = step.StepMemo()
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
        self._table.refuse_strategy(self._what)
        embedding_shape = _first(input_shape)
        if embedding_shape[-1] is None:
            raise ValueError(rules.UNKNOWN_DIM.format(what=self._what,
                                                      shape=tuple(embedding_shape)))
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, embedding_shape[-1]),
            initializer="zeros", trainable=False, dtype="float32", autocast=False,
            **self._table.table_options())

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
        model, fit_weights = step.keras_step()
        if model is None:
            self._table.require_visible_step()
        fit_weights = sample_weights(fit_weights, self._what, "fit's sample_weight")
        if fit_weights is not None:
            weights = fit_weights if weights is None else weights * fit_weights
        loss, embedding, check = self._term(labels, embedding, weights, training)
        self.add_loss(loss)
        # On TensorFlow without XLA what follows waits for the label check (the
        # output, loss, gradients), and so do the optimizer's variables (not
        # `iterations`, a tensor under gradient accumulation): a refused step changes nothing.
        if check is not None and getattr(model, "optimizer", None) is not None:
            self._table.hold(check, model.optimizer.variables)
        return embedding

    def term(self, labels, embedding, sample_weight=None, training=False):
        """`weight * mean center loss` from the pre-update centers; updates
        the centers if `training` is true and the layer is trainable. What
        `call` and `CenterLossModel` use; the layer must be built."""
        weights = sample_weights(sample_weight, self._what, "sample_weight")
        return self._term(labels, embedding, weights, training)[0]

    def guard(self, labels, sample_weight, variables):
        """Checks a step's `labels` and `sample_weight` before the step runs:
        raises now where the backend can; in a TensorFlow graph, every later
        write of `variables` in the step waits for the check, so a refused
        step changes nothing. What `CenterLossModel.train_step` uses."""
        weights = sample_weights(sample_weight, self._what, "sample_weight")
        self._table.hold(self._checked(labels, weights)[2], variables)

    def _checked(self, labels, weights):
        """`(ids, ok, check)`: see `Table.checked`."""
        return self._table.checked(labels, weights, self.num_classes, self._what)

    def _term(self, labels, embedding, weights, training):
        """`(loss, embedding, check)`: loss and embedding computed only once
        the labels and weights passed `check` (TensorFlow graphs; else None)."""
        table = self._table
        table.refuse_strategy(self._what)
        # Without training both calls read the same centers: nothing to refuse.
        if training and self._last_step.seen(step.step_token()):
            table.undo(self.centers)  # eager (torch): the first call's update
            raise ValueError(rules.SECOND_CALL.format(what=self._what, where="in one step"))
        features = keras.ops.cast(embedding, "float32")
        if len(features.shape) != 2:
            raise ValueError(rules.EMBEDDING_SHAPE.format(what=self._what,
                                                          shape=tuple(features.shape)))
        ids, ok, check = self._checked(labels, weights)
        ids = table.after(check, ids)
        if ok is not None:
            # Where the check cannot raise (XLA, a Keras step on JAX) a bad
            # sample reads row 0 and has weight 0: it never moves a center.
            keep = keras.ops.cast(ok, "float32")
            weights = keep if weights is None else keep * keras.ops.where(ok, weights, 0.0)
        # The loss sees the pre-update centers. Frozen (layer or model
        # trainable=False) centers stay put, as BatchNormalization's statistics do.
        # Every sample valid and of weight 1 (checked now): the loss's mean
        # from one reduction, no per-sample losses.
        mean = ok is None and weights is None
        loss, centers_batch = table.term(self.centers, ids, features, self.alpha, weights,
                                         bool(training and self.trainable), self._what, mean)
        if self._center_metric is not None:
            ones = keras.ops.ones_like(ids, dtype="float32")
            metrics.record(self._center_metric, self, step.keras_step(False)[0], ids,
                           ones > 0 if ok is None else ok, features, centers_batch,
                           ones if weights is None else weights)
        if not mean:
            per_sample = loss if weights is None else loss * weights
            if ok is not None:
                # There the term also reads NaN, so the progress bar, History and
                # TerminateOnNaN show the bad batch; no gradient reaches the NaN.
                per_sample = keras.ops.where(ok, per_sample, float("nan"))
            loss = table.mean(per_sample)
        return (table.loss_after(check, self.weight * loss), table.after(check, embedding),
                check)

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
