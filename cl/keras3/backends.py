"""Which Keras 3 backend runs, and so which centers table a `cl.keras3`
layer uses: the one place that picks. Each backend's table module imports
its framework, so only the running backend's is imported."""

import keras

from cl import rules
from cl.backend_math import JAX, TENSORFLOW, TORCH

_BACKENDS = {"tensorflow": TENSORFLOW, "jax": JAX, "torch": TORCH}


def math_backend():
    """cl.formulas' backend for the running Keras 3 backend; raises
    NotImplementedError for another."""
    name = keras.backend.backend()
    if name not in _BACKENDS:
        raise NotImplementedError(rules.KERAS3_BACKEND.format(name=name))
    return _BACKENDS[name]


def table_for(backend):
    """A new `cl.keras3.table.Table` of `backend`'s subclass."""
    if backend == TORCH:
        from cl.keras3.torch_table import TorchTable
        return TorchTable()
    if backend == JAX:
        from cl.keras3.jax_table import JaxTable
        return JaxTable()
    from cl.keras3.tf_table import TensorFlowTable
    return TensorFlowTable()
