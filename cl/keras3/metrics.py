"""`center_distance` and `center_ratio` for `cl.keras3`, the graph API's
center metrics (`cl.center_metrics`) as one Keras 3 metric of the layer.

Per sample, from the rows of the centers the step already read (before its
update; never the whole table, O(batch^2 + batch * dim) whatever
num_classes is):
  center_distance: ||x_i - c_{y_i}||.
  center_ratio: that divided by the mean distance between the centers of
    the batch's distinct classes (0 while they coincide or with one class).
Both are averaged over the epoch's samples (weighted by the step's sample
weights, as the loss is), as Keras averages a compiled metric.

Where Keras runs the forward pass statelessly (a JAX step) a metric update
inside a layer is lost; there the layer's values wait for the model's
`compute_loss`, which Keras runs with the metrics' state, and are applied
there.
"""

import functools

import keras

from cl.keras3 import step

DISTANCE, RATIO = "center_distance", "center_ratio"


def center_stats(ids, ok, features, centers_batch):
    """`(distance, ratio)`, each float32 `[batch]`, as `cl.center_metrics`
    defines them; `ok` rows are the valid samples (the others count in no
    class)."""
    ops = keras.ops
    features = ops.stop_gradient(ops.cast(features, "float32"))
    centers_batch = ops.stop_gradient(centers_batch)
    distance = ops.sqrt(ops.sum(ops.square(features - centers_batch), axis=1))
    # The first valid row of each class stands for it: K distinct classes.
    same = ops.logical_and(ops.equal(ids[:, None], ids[None, :]), ok[None, :])
    batch = ops.shape(ids)[0]
    earlier = ops.greater(ops.arange(batch)[:, None], ops.arange(batch)[None, :])
    repeated = ops.any(ops.logical_and(same, earlier), axis=1)
    first = ops.cast(ops.logical_and(ok, ops.logical_not(repeated)), "float32")
    # ||a - b||^2 from the Gram matrix of the rows, centered for precision.
    rows = centers_batch - ops.mean(centers_batch, axis=0, keepdims=True)
    norms = ops.sum(ops.square(rows), axis=1)
    squared = norms[:, None] + norms[None, :] - 2.0 * ops.matmul(rows, ops.transpose(rows))
    pair = first[:, None] * first[None, :] * (1.0 - ops.eye(batch, dtype="float32"))
    gaps = ops.sqrt(ops.maximum(squared * pair, 0.0))
    count = ops.sum(first)
    between = ops.divide_no_nan(ops.sum(gaps), count * (count - 1.0))
    return distance, ops.divide_no_nan(distance, between)


class CenterMetric(keras.metrics.Metric):
    """Epoch means of `center_distance` and `center_ratio` (one result dict;
    the keys carry `prefix`, the layer's name where a model has several)."""

    def __init__(self, name="center_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.prefix = ""
        self.labelled = False  # shown only once the layer got labels
        self.distance = self.add_variable((), "zeros", name="distance")
        self.ratio = self.add_variable((), "zeros", name="ratio")
        self.count = self.add_variable((), "zeros", name="count")

    def update_state(self, distance, ratio, weights):
        self.distance.assign_add(keras.ops.sum(distance * weights))
        self.ratio.assign_add(keras.ops.sum(ratio * weights))
        self.count.assign_add(keras.ops.sum(weights))

    def result(self):
        if not self.labelled:
            return {}
        return {self.prefix + DISTANCE: keras.ops.divide_no_nan(self.distance, self.count),
                self.prefix + RATIO: keras.ops.divide_no_nan(self.ratio, self.count)}


def _prefix(metric, layer, model):
    """'' or the layer's name + '_', where `model` holds several CenterLoss."""
    if model is None:
        return metric.prefix
    kind = type(layer)
    several = sum(isinstance(other, kind) for other in step.layers_of(model)) > 1
    return f"{layer.name}_" if several else ""


def record(metric, layer, model, ids, ok, features, centers_batch, weights):
    """Adds the batch to `metric`, `layer`'s CenterMetric. `model`: the model
    whose Keras step runs, or None."""
    metric.labelled = True
    metric.prefix = _prefix(metric, layer, model)
    update = functools.partial(metric.update_state, *center_stats(ids, ok, features, centers_batch),
                               weights)
    scope = step.stateless_scope()
    if scope is None or scope.get_current_value(metric.count) is not None:
        update()  # a real update, or one Keras collects (JAX compute_loss)
    elif model is not None:
        _pending(model)[id(layer)] = update  # JAX forward pass: in compute_loss
    # else a symbolic or stateless call outside a Keras step: nothing to add.


def _pending(model):
    """The updates waiting for `model.compute_loss`, which applies them."""
    hook = model.__dict__.get("_cl_metric_updates")
    if hook is None:
        hook = {}
        original = model.compute_loss

        @functools.wraps(original)
        def compute_loss(*args, **kwargs):
            loss = original(*args, **kwargs)
            updates = list(hook.values())
            hook.clear()
            for update in updates:
                update()
            return loss

        object.__setattr__(model, "_cl_metric_updates", hook)
        object.__setattr__(model, "compute_loss", compute_loss)
    return hook
