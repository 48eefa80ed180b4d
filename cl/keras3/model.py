"""`cl.keras3.CenterLossModel`: `fit(x, y)` with center loss, the labels
as targets only, around a backbone `x -> (logits, embedding)`; its
`CenterLoss` layer holds the table and applies the update."""

import keras

from cl import rules
from cl.keras3 import step
from cl.keras3.layer import CenterLoss


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
            centers = self.center_loss.centers
            self.center_loss.guard(y, sample_weight, [
                v for v in self.variables + self.optimizer.variables + self.metrics_variables
                if v is not centers])
        return super().train_step(*args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, embedding = _pair(y_pred)
        loss = super().compute_loss(x, y, logits, sample_weight, training=training)
        # Scaled per replica as Keras scales the compiled loss (tf.distribute).
        return loss + step.replica_share(self.center_loss.term(y, embedding, sample_weight,
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
