"""The centers table of `cl.keras3` on the JAX backend.

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
operands, the `[batch]` labels and weights, are first made whole on every
device: a host callback runs on one device, and XLA cannot move a
batch-sharded operand there without a full rematerialisation (its
"Involuntary full rematerialization" warning). Imported on JAX only.
"""

import functools

import jax
import keras

from cl.backend_math import JAX
from cl.keras3 import labels, step
from cl.keras3.table import Table


def replicated(tensor):
    """`tensor` whole on every device of the running `keras.distribution`
    (as it is without one, or for None). Meant for `[batch]` values only."""
    distribution = keras.distribution.distribution()
    if tensor is None or distribution is None:
        return tensor
    layout = keras.distribution.TensorLayout([None] * len(tensor.shape),
                                             distribution.device_mesh)
    return keras.distribution.distribute_tensor(tensor, layout)


class JaxTable(Table):
    backend = JAX

    def check(self, ok, shown, weights, num_classes, what):
        if not isinstance(shown, jax.core.Tracer) and step.stateless_scope() is None:
            return super().check(ok, shown, weights, num_classes, what)  # eager: raise
        warn = functools.partial(labels.warn_if_invalid, num_classes=num_classes, what=what)
        # The host callback only on a step with a bad sample: a callback
        # every step costs more than the update itself.
        jax.lax.cond(jax.numpy.all(ok), lambda *_: None,
                     lambda *operands: jax.debug.callback(warn, *operands),
                     replicated(shown), replicated(weights))
        return None

    def read(self, variable, ids):
        return variable.value[ids]

    def subtract(self, variable, ids, deltas):
        # Rows of one class add up (formulas.center_update's per-sample rows),
        # so add, never set. Under jit Keras donates the state: in place.
        variable.assign(variable.value.at[ids].add(-deltas))
