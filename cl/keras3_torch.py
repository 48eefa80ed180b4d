"""`cl.keras3`'s table operations on the PyTorch backend of Keras 3.

Keras's torch trainer runs its steps eagerly on the variables themselves
(no detached state, as on JAX): a bad label raises before any change and
loses nothing. Reads and writes touch the batch's rows only, O(batch * dim)
whatever num_classes is: `index_select`, and `index_add_` in place on the
variable's tensor. Imported only on the torch backend.
"""

import numpy as np
import torch
from keras.src.backend.common.stateless_scope import get_stateless_scope

from cl import formulas, rules


def _host(tensor):
    return None if tensor is None else np.asarray(tensor.detach().cpu().numpy())


def table(base, raise_if_invalid):
    """The torch table: `TorchOps` over `base` (`cl.keras3_backends`' table,
    whose `term` reads, computes and subtracts), raising with
    `raise_if_invalid(shown, weights, num_classes, what)`."""
    table_class = type("TorchTable", (TorchOps, base), {
        "backend": formulas.TORCH, "raise_if_invalid": staticmethod(raise_if_invalid)})
    return table_class()


class TorchOps:
    """The torch half of a centers table (mixed in before the shared one)."""

    raise_if_invalid = None

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
        # Tracing: Keras's frames are not on the stack at all (see keras_step).
        if torch.compiler.is_compiling():
            raise NotImplementedError(rules.HIDDEN_STEP.format(name="train_step"))

    def check(self, ok, shown, weights, num_classes, what):
        if shown.device.type == "meta":  # a symbolic call: no values to check
            return None
        self.raise_if_invalid(_host(shown), _host(weights), num_classes, what)
        return None

    def after(self, check, tensor):
        return tensor

    def hold(self, check, variables):
        pass

    def refuse_strategy(self, what):
        pass  # single device: no strategy to refuse

    def read(self, variable, ids):
        return torch.index_select(variable.value, 0, ids)

    def subtract(self, variable, ids, deltas):
        deltas = deltas.detach().to(variable.value.dtype)
        if get_stateless_scope() is not None:
            # A stateless call (never fit's torch step): a new value.
            variable.assign(variable.value.index_add(0, ids, -deltas))
            return
        with torch.no_grad():
            rows = torch.index_select(variable.value, 0, ids)
            self._rows_before[id(variable)] = (ids.long(), rows)
            variable.value.index_add_(0, ids, -deltas)
