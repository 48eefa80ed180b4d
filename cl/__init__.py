"""cl: center loss (Wen et al., ECCV 2016) for Keras 2 / TF1-style graphs.

Drop-in for the blog's `cl.py`: the same public names, with the paper's math,
per-sample losses, reuse in one graph, guarded labels and NaN-safe centers.
The math is in `cl.formulas`, the graph ops in `cl.ops`, Keras in
`cl.keras_support`, version plumbing in `cl.compat`.
"""

from cl._version import __version__
from cl.formulas import center_update, per_sample_center_loss
from cl.ops import categorical_accuracy, center_loss, get_centers, loss, softmax_center_loss, softmax_loss

# The blog's constants. Read at call time by `loss` and `center_loss`, so
# `cl.NUM_CLASSES = 10` before compiling takes effect.
NUM_CLASSES = 240
ALPHA = 0.6
LAMBDA = 0.0005

# Keras names load lazily: the TF1 session path works without Keras 2.
_KERAS_NAMES = (
    "CenterLoss", "SoftmaxCenterLoss", "SparseSoftmaxLoss", "compile_model",
    "initialize", "center_metrics", "centers_of", "custom_objects",
    "save_model", "load_model", "save_centers", "load_centers", "accuracy",
)


def __getattr__(name):
    if name in _KERAS_NAMES:
        from cl import keras_support
        return getattr(keras_support, name)
    raise AttributeError(f"module 'cl' has no attribute {name!r}")


__all__ = [
    "NUM_CLASSES", "ALPHA", "LAMBDA", "__version__",
    "center_loss", "softmax_loss", "loss", "categorical_accuracy",
    "softmax_center_loss", "get_centers", "center_update",
    "per_sample_center_loss", *_KERAS_NAMES,
]
