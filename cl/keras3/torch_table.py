"""The centers table of `cl.keras3` on the PyTorch backend.

Keras's torch trainer runs its steps eagerly on the variables themselves
(no detached state, as on JAX): a bad label raises before any change and
loses nothing. Reads and writes touch the batch's rows only, O(batch * dim)
whatever num_classes is: `index_select`, and `index_add_` in place on the
variable's tensor. A step traced by torch.compile hides fit's sample
weights from the layer: refused. Imported on PyTorch only.
"""

import math

import torch

from cl import formulas, rules
from cl.backend_math import TORCH
from cl.keras3 import step
from cl.keras3.table import Table


class TorchTable(Table):
    backend = TORCH

    def __init__(self):
        # One table per layer, so one of each: (ids, rows) before this step's
        # update (what `undo` restores), and the float32 [num_classes]
        # zeros `_known_counts` counts in.
        self._rows_before = None
        self._counting = None

    def term(self, variable, ids, features, alpha, weights, update, what, mean=False):
        # Table.term's steps, the table's tensor read once (Variable.value
        # costs a few us a call, as does keras.ops.stop_gradient).
        self._rows_before = None
        table = variable.value
        rows = torch.index_select(table, 0, ids).detach()
        loss, deltas = formulas.center_term(
            ids, features, rows, alpha, weights, TORCH, update=update,
            counts=self._known_counts(table, ids, features, weights) if update else None,
            mean=mean)
        if update:
            self._subtract(variable, table, ids, deltas, rows)
        return loss, rows

    def undo(self, variable):
        """Restores the rows this step's update changed (eager: it already
        ran when a second labelled call of the step is refused)."""
        saved, self._rows_before = self._rows_before, None
        if saved is not None:
            ids, rows = saved
            with torch.no_grad():
                variable.value.index_copy_(0, ids.long(), rows)

    def require_visible_step(self):
        # Tracing: Keras's frames are not on the stack at all (step.keras_step).
        if torch.compiler.is_compiling():
            raise NotImplementedError(rules.HIDDEN_STEP.format(name="train_step"))

    def checked(self, given, weights, num_classes, what):
        # Integer class ids, no weights (fit's usual batch): their least and
        # greatest, one op, are all the rules need; the rest (floats, one-hot,
        # weights, a bad label and its message) take the general route.
        if isinstance(given, torch.Tensor) and given.dtype in (torch.int32, torch.int64) and \
                given.ndim == 1 and given.numel() and weights is None and \
                given.device.type != "meta" and not torch.compiler.is_compiling():
            least, greatest = torch.aminmax(given)
            if least.item() >= 0 and greatest.item() < num_classes:
                return given, None, None
        return super().checked(given, weights, num_classes, what)

    def check(self, ok, shown, weights, num_classes, what):
        if shown.device.type == "meta":  # a symbolic call: no values to check
            return ok, None
        if ok.all():  # one read back to the host (keras.ops.all: 3x the time)
            return None, None
        return super().check(ok, shown, weights, num_classes, what)  # raises

    def mean(self, values):
        return values.mean()  # keras.ops.mean: 15 us more a call, dtype bookkeeping

    def _known_counts(self, table, ids, features, weights):
        """`formulas.center_term`'s `counts`, or None: eager, no weights, and
        every feature row's sum finite (their total is: a non-finite row sum
        makes it non-finite; an overflow of the total alone only takes the
        general route). One read back to the host."""
        if weights is not None or torch.compiler.is_compiling() or \
                not math.isfinite(features.detach().sum(1).sum().item()):
            return None
        # The batch's labels counted into a zero [num_classes] vector kept
        # for the table, read at the labels, counted out again (exactly 0):
        # three O(batch) ops; torch.unique's sort costs 3-4x as much.
        # (Remade if the table's size or device changed.)
        counting = self._counting
        if counting is None or counting.shape[0] != table.shape[0] or \
                counting.device != table.device:
            counting = self._counting = table.new_zeros(table.shape[0])
        ones = features.new_ones(ids.shape[0])
        counts = counting.index_add_(0, ids, ones).index_select(0, ids)
        counting.index_add_(0, ids, ones, alpha=-1)
        return counts

    def read(self, variable, ids):
        return torch.index_select(variable.value, 0, ids)

    def subtract(self, variable, ids, deltas, rows):
        self._subtract(variable, variable.value, ids, deltas, rows)

    def _subtract(self, variable, table, ids, deltas, rows):
        deltas = deltas.detach()
        if deltas.dtype != table.dtype:
            deltas = deltas.to(table.dtype)
        if step.stateless_scope() is not None:
            # A stateless call (never fit's torch step): a new value.
            variable.assign(table.index_add(0, ids, deltas, alpha=-1))
            return
        with torch.no_grad():
            self._rows_before = (ids, rows)
            table.index_add_(0, ids, deltas, alpha=-1)
