"""cl: center loss (Wen et al., ECCV 2016) for Keras 2 / TF1-style graphs,
and for TF2 and Keras 3 (TensorFlow, JAX and PyTorch backends).

Drop-in for the blog's `cl.py`: the same public names, with the paper's math,
per-sample losses, reuse in one graph, guarded labels and NaN-safe centers.
Layers, imports pointing down (the full map, which the tests enforce, is
docs/design.md): `cl.formulas` (the paper's math) over `cl.backend_math`,
`cl.rules` (every label rule and refusal message), `cl.compat`,
`cl.settings`, `cl.checkpoints`; the TensorFlow primitives in `cl.graph`;
the blog's names in `cl.ops`; the front-ends `cl.keras2`, `cl.towers` (TF1
towers; `cl.distribute` is its old name), `cl.tf2` and `cl.keras3`.

Everything but the constants loads on first use, so `import cl` imports no
TensorFlow: `cl.keras3` runs with Keras 3 on JAX without it installed.
"""

import importlib
import sys
import types

from cl import settings
from cl._version import __version__
from cl.graph import sites

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
               "towers", "distribute", "settings", "graph")

# name -> module it comes from; the one place to edit when a name moves.
_LAZY = {
    **dict.fromkeys(_FORMULAS_NAMES, "cl.formulas"),
    **dict.fromkeys(_OPS_NAMES, "cl.ops"),
    **dict.fromkeys(_KERAS_NAMES, _KERAS_MODULE),
    "read_centers": "cl.checkpoints",
    "TowerCenterLoss": "cl.towers",
}


class _Package(types.ModuleType):
    """`cl.NUM_CLASSES = 10` (the blog's style) sets `cl.settings`, where the
    ops read their defaults when a loss is built."""

    def __setattr__(self, name, value):
        if name in settings.NAMES:
            setattr(settings, name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def _keras2_compile_site():
    """The Keras 2 front-end's site for a loss or metric that Keras 2's
    compile is building, else None. Registered with `cl.graph.sites` here,
    at the top, so that the graph primitives never import a front-end, and
    the front-end (with Keras 2) is imported only when Keras 2 is the caller."""
    from cl import compat
    found = compat.keras_compile_frame()
    if found is None:
        return None
    return importlib.import_module("cl.keras2.site").CompileSite(*found)


sites.register(_keras2_compile_site)


def _extend_loaded_keras2():
    """If the user's Keras 2 is already imported, extend its Model's state
    routes now (`cl.keras2.model_methods`), so that an `.h5` file loaded before
    compile keeps its centers even when only `cl.loss` is used later.
    Imports nothing that is not already imported."""
    import sys
    if any(f"{root}.src.engine.training_v1" in sys.modules for root in ("tf_keras", "keras")):
        importlib.import_module("cl.keras2")


def __getattr__(name):
    if name in settings.NAMES:
        return getattr(settings, name)
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"cl.{name}")
    raise AttributeError(f"module 'cl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(settings.NAMES) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "NUM_CLASSES", "ALPHA", "LAMBDA", "UPDATE_ON", "__version__",
    "center_loss", "softmax_loss", "loss", "categorical_accuracy",
    "softmax_center_loss", "get_centers", "center_update",
    "per_sample_center_loss", "read_centers", "TowerCenterLoss", *_KERAS_NAMES,
]

_extend_loaded_keras2()
