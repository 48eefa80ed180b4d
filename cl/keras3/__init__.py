"""Keras 3 (TensorFlow, JAX and PyTorch backends): center loss as a layer,
`CenterLoss`, or in a model, `CenterLossModel`.

`CenterLoss` holds the `[num_classes, dim]` centers (a non-trainable float32
weight). Called on `[embedding, labels]` (or `[embedding, labels,
sample_weight]`) it adds the center term from the pre-update centers with
`add_loss`, applies the paper's update in training steps only, and returns
the embedding as given. `CenterLossModel` wraps a model `x -> (logits,
embedding)` so that `fit(x, y)` takes the labels as targets only.

Inside: `layer` and `model` (the public classes), `metrics`
(center_distance, center_ratio), `labels` (class ids and weights from what
Keras passes), `table` (read rows -> cl.formulas -> write rows) with one
subclass per backend (`tf_table`, `jax_table`, `torch_table`) picked by
`backends`, and `step`, the only module using Keras's internals.
"""

from cl.keras3.layer import CenterLoss
from cl.keras3.model import CenterLossModel

__all__ = ["CenterLoss", "CenterLossModel"]
