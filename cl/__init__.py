"""cl: center loss (Wen et al., ECCV 2016) for Keras 2 / TF1-style graphs,
and for TF2 and Keras 3 (TensorFlow and JAX backends).

Drop-in for the blog's `cl.py`: the same public names, with the paper's math,
per-sample losses, reuse in one graph, guarded labels and NaN-safe centers.
The math is in `cl.formulas`, the graph ops in `cl.ops`, Keras 2 in
`cl.keras2`, version plumbing in `cl.compat`; TF2 custom loops in
`cl.tf2`, Keras 3 in `cl.keras3`, reading old checkpoints in `cl.checkpoints`.

Everything but the constants loads on first use, so `import cl` imports no
TensorFlow: `cl.keras3` runs with Keras 3 on JAX without it installed.
"""

import importlib

from cl._version import __version__

# The blog's constants. Read at call time by `loss` and `center_loss`, so
# `cl.NUM_CLASSES = 10` before compiling takes effect.
NUM_CLASSES = 240
ALPHA = 0.6
LAMBDA = 0.0005
# What makes a session run apply the center update (see cl.update_ties):
# "loss", the blog's (running the loss or its gradient), or "gradient"
# (only a run that computes the gradient: Estimator, hooks, summary runs).
UPDATE_ON = "loss"

# Names that load their module (and TensorFlow) on first use.
_FORMULAS_NAMES = ("center_update", "per_sample_center_loss")
_OPS_NAMES = ("categorical_accuracy", "center_loss", "get_centers", "loss",
              "softmax_center_loss", "softmax_loss")
# Keras 2 names: the TF1 session path works without Keras 2.
_KERAS_NAMES = (
    "CenterLoss", "SoftmaxCenterLoss", "SparseSoftmaxLoss", "compile_model",
    "initialize", "center_metrics", "centers_of", "custom_objects",
    "save_model", "load_model", "save_centers", "load_centers", "accuracy",
)
_KERAS_MODULE = "cl.keras2"
_SUBMODULES = ("keras3", "tf2", "checkpoints", "formulas", "ops", "compat",
               "distribute")

# name -> module it comes from; the one place to edit when a name moves.
_LAZY = {
    **dict.fromkeys(_FORMULAS_NAMES, "cl.formulas"),
    **dict.fromkeys(_OPS_NAMES, "cl.ops"),
    **dict.fromkeys(_KERAS_NAMES, _KERAS_MODULE),
    "read_centers": "cl.checkpoints",
    "TowerCenterLoss": "cl.distribute",
}


def _extend_loaded_keras2():
    """If the user's Keras 2 is already imported, extend its Model's state
    routes now (`cl.keras2.saving`), so that an `.h5` file loaded before
    compile keeps its centers even when only `cl.loss` is used later.
    Imports nothing that is not already imported."""
    import sys
    if any(f"{root}.src.engine.training_v1" in sys.modules for root in ("tf_keras", "keras")):
        importlib.import_module("cl.keras2")


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"cl.{name}")
    raise AttributeError(f"module 'cl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "NUM_CLASSES", "ALPHA", "LAMBDA", "UPDATE_ON", "__version__",
    "center_loss", "softmax_loss", "loss", "categorical_accuracy",
    "softmax_center_loss", "get_centers", "center_update",
    "per_sample_center_loss", "read_centers", "TowerCenterLoss", *_KERAS_NAMES,
]

_extend_loaded_keras2()
