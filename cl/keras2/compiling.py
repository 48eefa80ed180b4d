"""`cl.compile_model` and `cl.initialize`: compile, then initialise what the
loss created, in the session Keras uses."""

import warnings

import tensorflow as tf

from cl import compat, ops
from cl.graph import shards
from cl.keras2 import metrics, model_methods
from cl.keras2.state import centers_of

keras = compat.keras_module()


def _initialise_missing(model, variables):
    """Initialises those of `variables` not yet initialised, in Keras's session.

    Never runs global_variables_initializer: that wipes loaded weights.
    """
    if not variables:
        return
    session = compat.keras_backend(model).get_session()
    flags = session.run([tf.compat.v1.is_variable_initialized(v) for v in variables])
    missing = [v for v, ready in zip(variables, flags) if not ready]
    if missing:
        session.run(tf.compat.v1.variables_initializer(missing))


def initialize(model):
    """Initialises the cl centers of a compiled `model` that are uninitialised."""
    _initialise_missing(model, [variable for table in centers_of(model)
                                for variable in shards.shards_of(table)])


def compile_model(model, optimizer, loss=None, metrics=None, **compile_kwargs):
    """Compiles `model`, then initialises what the loss created, and returns it.

    loss defaults to `cl.loss`. The metric strings 'accuracy'/'acc' become
    `cl.accuracy`, which reads sparse and one-hot labels alike. Only
    still-uninitialised variables are initialised, in the session Keras
    uses, so weights loaded or set before are kept (the blog's
    global_variables_initializer wipes them). A subclassed model that has
    not been called yet builds its losses (and tables) at its first fit.
    """
    compat.check_keras_model(model)
    _check_optimizer(optimizer)
    model_methods.install()
    model.compile(optimizer=optimizer, loss=loss if loss is not None else ops.loss,
                  metrics=_own_accuracy(metrics), **compile_kwargs)
    built = getattr(model, "_is_compiled", True) and getattr(model, "inputs", None)
    if built and not centers_of(model):
        warnings.warn("cl.compile_model: the model's loss created no cl centers; "
                      "is a cl loss among its losses?", stacklevel=2)
    initialize(model)
    return model


def _own_accuracy(value):
    """`value` with 'accuracy'/'acc' replaced by `cl.accuracy` (see there)."""
    if isinstance(value, dict):
        return {output: _own_accuracy(item) for output, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_own_accuracy(item) for item in value]
    return metrics.accuracy if value in ("accuracy", "acc") else value


def _check_optimizer(optimizer):
    legacy = getattr(keras.optimizers, "legacy", None)
    base = getattr(getattr(keras.optimizers, "Optimizer", None), "__mro__", ())
    new_style = any(cls.__name__ == "_BaseOptimizer" for cls in base)
    if (new_style and isinstance(optimizer, keras.optimizers.Optimizer)
            and not (legacy and isinstance(optimizer, legacy.Optimizer))):
        cls = type(optimizer).__name__
        raise TypeError(
            f"cl.compile_model: {cls} is a new-style Keras optimizer, which does "
            f"not run in graph mode. Pass the legacy one, e.g. "
            f"{keras.__name__}.optimizers.legacy.{cls}(learning_rate=..., "
            f"decay=...) (the blog's Adam(lr=..., decay=...) becomes "
            f"optimizers.legacy.Adam(learning_rate=..., decay=...)), or a "
            f"string such as 'adam'.")
