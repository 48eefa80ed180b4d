"""Keras 2 (tf_keras, or tf.keras on TF 2.15) in graph mode, one concern per
module, each importing only those before it: `state` (the tables and
settings a model carries) -> `site` (a compile building a cl loss or
metric) -> `losses`, `metrics` -> `files` (centers in HDF5 and
TF-format files) -> `model_methods` (centers on every Keras state route)
-> `compiling` (compile_model). The math stays in `cl.formulas`, the graph
ops in `cl.ops` and `cl.graph`.
"""

from cl.keras2 import model_methods
from cl.keras2.compiling import compile_model, initialize
from cl.keras2.files import load_centers, save_centers
from cl.keras2.losses import CenterLoss, SoftmaxCenterLoss, SparseSoftmaxLoss
from cl.keras2.metrics import accuracy, center_metrics
from cl.keras2.model_methods import custom_objects, load_model, save_model
from cl.keras2.state import centers_of

# Centers follow get/set_weights and HDF5 files from the moment cl's Keras
# support is imported, so a weights file loaded before compile is not lost.
model_methods.install()

__all__ = [
    "CenterLoss", "SoftmaxCenterLoss", "SparseSoftmaxLoss", "accuracy",
    "center_metrics", "centers_of", "compile_model", "custom_objects",
    "initialize", "load_centers", "load_model", "save_centers", "save_model",
]
