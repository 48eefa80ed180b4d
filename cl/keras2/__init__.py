"""Keras 2 (tf_keras, or tf.keras on TF 2.15) in graph mode, one concern per
module: `losses`, `metrics`, `compiling` (compile_model), `site` (the
model's tables during compile), `saving` (centers on every state route).
The math stays in `cl.formulas`, the graph ops in `cl.ops`.
"""

from cl.keras2 import saving
from cl.keras2.compiling import compile_model, initialize
from cl.keras2.losses import CenterLoss, SoftmaxCenterLoss, SparseSoftmaxLoss
from cl.keras2.metrics import accuracy, center_metrics
from cl.keras2.saving import custom_objects, load_centers, load_model, save_centers, save_model
from cl.keras2.site import centers_of

# Centers follow get/set_weights and HDF5 files from the moment cl's Keras
# support is imported, so a weights file loaded before compile is not lost.
saving.install()

__all__ = [
    "CenterLoss", "SoftmaxCenterLoss", "SparseSoftmaxLoss", "accuracy",
    "center_metrics", "centers_of", "compile_model", "custom_objects",
    "initialize", "load_centers", "load_model", "save_centers", "save_model",
]
