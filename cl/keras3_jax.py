"""`cl.keras3`'s table operations on the JAX backend of Keras 3.

Reads and writes touch the batch's rows only, O(batch * dim) whatever
num_classes is: `table[ids]` and `.at[ids].add`, in place under jit, where
Keras donates the state. Under `keras.distribution` jit compiles the step
on the global arrays: a replicated table (`DataParallel`) or one split by
rows (`ModelParallel`, `layout_map[".*centers"] = ("model", None)`) follows
the rule on the global batch, and XLA reads and writes each device's own
rows (no collective of the table's size).

Inside a Keras step (jitted or not) an error would lose the model's state
(Keras's JAX fit detaches the variables' values for the step): the caller
masks the bad samples and a host callback warns, on a step that has any
(`lax.cond`: a callback every step would cost more than the update). Its
operands, the
`[batch]` labels and weights, are first made whole on every device: a
host callback runs on one device, and XLA cannot move a batch-sharded
operand there without a full rematerialisation (its "Involuntary full
rematerialization" warning). Imported only on the JAX backend.
"""

import functools

import jax
import keras
import numpy as np
from keras.src.backend.common.stateless_scope import get_stateless_scope

from cl import formulas


def table(base, raise_if_invalid, warn_if_invalid):
    """The JAX table: `JaxOps` over `base` (`cl.keras3_backends`' table,
    whose `term` reads, computes and subtracts), raising (outside a step)
    with `raise_if_invalid(shown, weights, num_classes, what)` and warning
    (inside one) with `warn_if_invalid`, same arguments."""
    table_class = type("JaxTable", (JaxOps, base), {
        "backend": formulas.JAX, "raise_if_invalid": staticmethod(raise_if_invalid),
        "warn_if_invalid": staticmethod(warn_if_invalid)})
    return table_class()


def replicated(tensor):
    """`tensor` whole on every device of the running `keras.distribution`
    (as it is without one, or for None). Meant for `[batch]` values only."""
    distribution = keras.distribution.distribution()
    if tensor is None or distribution is None:
        return tensor
    layout = keras.distribution.TensorLayout([None] * len(tensor.shape),
                                             distribution.device_mesh)
    return keras.distribution.distribute_tensor(tensor, layout)


class JaxOps:
    """The JAX half of a centers table (mixed in before the shared one)."""

    raise_if_invalid = warn_if_invalid = None

    def check(self, ok, shown, weights, num_classes, what):
        if isinstance(shown, jax.core.Tracer) or get_stateless_scope() is not None:
            warn = functools.partial(self.warn_if_invalid, num_classes=num_classes, what=what)
            # The host callback only on a step with a bad sample: a callback
            # every step costs more than the update itself.
            jax.lax.cond(jax.numpy.all(ok), lambda *_: None,
                         lambda *operands: jax.debug.callback(warn, *operands),
                         replicated(shown), replicated(weights))
        else:
            self.raise_if_invalid(np.asarray(shown),
                                  None if weights is None else np.asarray(weights),
                                  num_classes, what)
        return None

    def after(self, check, tensor):
        return tensor

    def hold(self, check, variables):
        pass

    def read(self, variable, ids):
        return variable.value[ids]

    def subtract(self, variable, ids, deltas):
        # Padding rows of formulas.center_update repeat a class with delta 0,
        # so add, never set. Under jit Keras donates the state: in place.
        variable.assign(variable.value.at[ids].add(-deltas))

    def refuse_strategy(self, what):
        pass  # tf.distribute does not exist here; keras.distribution is exact
