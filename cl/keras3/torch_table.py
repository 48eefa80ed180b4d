"""The centers table of `cl.keras3` on the PyTorch backend.

Keras's torch trainer runs its steps eagerly on the variables themselves
(no detached state, as on JAX): a bad label raises before any change and
loses nothing. Reads and writes touch the batch's rows only, O(batch * dim)
whatever num_classes is: `index_select`, and `index_add_` in place on the
variable's tensor. A step traced by torch.compile hides fit's sample
weights from the layer: refused. Imported on PyTorch only.
"""

import torch

from cl import rules
from cl.backend_math import TORCH
from cl.keras3 import step
from cl.keras3.table import Table


class TorchTable(Table):
    backend = TORCH

    def __init__(self):
        self._rows_before = {}  # id(variable): (ids, rows) of its last update

    def term(self, variable, *args):
        self._rows_before.pop(id(variable), None)
        return super().term(variable, *args)

    def undo(self, variable):
        """Restores the rows this step's update changed (eager: it already
        ran when a second labelled call of the step is refused)."""
        saved = self._rows_before.pop(id(variable), None)
        if saved is not None:
            with torch.no_grad():
                variable.value.index_copy_(0, *saved)

    def require_visible_step(self):
        # Tracing: Keras's frames are not on the stack at all (step.keras_step).
        if torch.compiler.is_compiling():
            raise NotImplementedError(rules.HIDDEN_STEP.format(name="train_step"))

    def check(self, ok, shown, weights, num_classes, what):
        if shown.device.type == "meta":  # a symbolic call: no values to check
            return None
        return super().check(ok, shown, weights, num_classes, what)

    def read(self, variable, ids):
        return torch.index_select(variable.value, 0, ids)

    def subtract(self, variable, ids, deltas):
        deltas = deltas.detach().to(variable.value.dtype)
        if step.stateless_scope() is not None:
            # A stateless call (never fit's torch step): a new value.
            variable.assign(variable.value.index_add(0, ids, -deltas))
            return
        with torch.no_grad():
            rows = torch.index_select(variable.value, 0, ids)
            self._rows_before[id(variable)] = (ids.long(), rows)
            variable.value.index_add_(0, ids, -deltas)
