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
(`lax.cond`). The callback is a pure one whose result, 0, the step's loss
carries (so XLA keeps it): an effectful callback (`jax.debug.callback`),
even one that never runs, takes the whole step off JAX's fast dispatch
path (measured: +0.2 ms a step, 1.1-1.5x a small model's step). Its
operands, the `[batch]` labels and weights, are first made whole on every
device: a host callback runs on one device, and XLA cannot move a
batch-sharded operand there without a full rematerialisation (its
"Involuntary full rematerialization" warning). Imported on JAX only.
"""

import functools

import jax
import keras
import numpy

from cl.backend_math import JAX
from cl.keras3 import labels, step
from cl.keras3.table import Table


def replicated(tensor):
    """`tensor` whole on every device of the running `keras.distribution`
    (as it is without one, or for None). Meant for a batch's values only."""
    return _laid_out(tensor, split=False)


def split_by_batch(tensor):
    """`tensor` split by samples over the running `keras.distribution`'s
    batch axis (as the batch's inputs are), or as it is without one."""
    return _laid_out(tensor, split=True)


def _laid_out(tensor, split):
    distribution = keras.distribution.distribution()
    if tensor is None or distribution is None or \
            (split and distribution.batch_dim_name is None):
        return tensor
    axes = [distribution.batch_dim_name if split else None] + [None] * (len(tensor.shape) - 1)
    layout = keras.distribution.TensorLayout(axes, distribution.device_mesh)
    return keras.distribution.distribute_tensor(tensor, layout)


class JaxTable(Table):
    backend = JAX

    def check(self, ok, shown, weights, num_classes, what):
        if not isinstance(shown, jax.core.Tracer) and step.stateless_scope() is None:
            return super().check(ok, shown, weights, num_classes, what)  # eager: raise
        warn = functools.partial(_warned, num_classes=num_classes, what=what)

        def bad_step(*operands):
            return jax.pure_callback(warn, jax.ShapeDtypeStruct((), jax.numpy.float32),
                                     *operands)

        zero = jax.lax.cond(jax.numpy.all(ok), lambda *_: jax.numpy.float32(0), bad_step,
                            replicated(shown), replicated(weights))
        return ok, zero

    def loss_after(self, check, loss):
        return loss if check is None else loss + check

    def read(self, variable, ids):
        # ids are class ids, never negative (0 where not ok): no wrapping.
        return variable.value.at[ids].get(mode="promise_in_bounds", wrap_negative_indices=False)

    def subtract(self, variable, ids, deltas, rows):
        # Rows of one class add up (formulas.center_update's per-sample rows),
        # so add, never set. Under jit Keras donates the state: in place.
        # The batch's rows whole on every device first: scattered while split
        # by batch, XLA all-reduces each device's whole share of the table.
        # Computed split by batch before that (as the inputs are): else XLA
        # gathers the rows' [batch, dim] mask and products and selects after.
        variable.assign(variable.value.at[replicated(ids)].add(
            -replicated(split_by_batch(deltas)), mode="promise_in_bounds",
            wrap_negative_indices=False))


def _warned(shown, weights, num_classes, what):
    """Warns about labels `shown` and `weights` (numpy); returns 0.0, the
    value the step's loss carries."""
    labels.warn_if_invalid(shown, weights, num_classes, what)
    return numpy.zeros((), numpy.float32)
