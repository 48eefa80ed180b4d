"""The centers table of a `cl.keras3` layer: read the batch's rows, apply
`cl.formulas`, write the rows back. O(batch * dim) whatever num_classes is:
a backend reads and writes only the rows of the batch's classes.

`Table` is the part every backend shares, and the defaults of what only
some backends do; one subclass per backend (`tf_table`, `jax_table`,
`torch_table`) supplies `read` and `subtract` and what differs, and
`cl.keras3.backends.table_for` picks it.
"""

import keras

from cl import formulas
from cl.keras3 import labels


class Table:
    """One backend's operations on a layer's `[num_classes, dim]` centers."""

    backend = None  # the cl.backend_math name the formulas run with

    def table_options(self):
        """Extra `add_weight` arguments for a new centers table."""
        return {}

    def refuse_strategy(self, what):
        """Raises under a strategy that would let copies of the table drift
        apart (tf.distribute); elsewhere there is none to refuse."""

    def require_visible_step(self):
        """Raises where a Keras step's frame (fit's sample weights) cannot be
        seen from the layer (torch.compile); elsewhere the step is plain Python."""

    def undo(self, variable):
        """Reverts this step's update where it already ran (eager torch)."""

    def check(self, ok, shown, weights, num_classes, what):
        """Raises ValueError now if a label or weight breaks a rule, and
        returns what later work must wait for (TensorFlow graphs), else None.
        `ok`: the valid samples; `shown`: the labels as given."""
        host = keras.ops.convert_to_numpy
        labels.raise_if_invalid(host(shown), None if weights is None else host(weights),
                                num_classes, what)
        return None

    def after(self, check, tensor):
        """`tensor`, computed only once `check` passed."""
        return tensor

    def hold(self, check, variables):
        """Makes every later write of `variables` in this step wait for `check`."""

    def read(self, variable, ids):
        """Rows `ids` of the table, `[batch, dim]`."""
        raise NotImplementedError

    def subtract(self, variable, ids, deltas):
        """`table[ids] -= deltas`, in place, adding the rows of repeated ids
        (`formulas.center_update`'s per-sample rows)."""
        raise NotImplementedError

    def term(self, variable, ids, features, alpha, weights, update, what):
        """`(per_sample, centers_batch)`: the per-sample loss and the rows it
        read (pre-update); applies the update on `weights`' samples if
        `update`. One read serves the loss, the update and the metrics."""
        centers_batch = keras.ops.stop_gradient(self.read(variable, ids))
        per_sample = formulas.per_sample_center_loss(features, centers_batch, self.backend)
        if update:
            self.subtract(variable, *formulas.center_update(
                ids, keras.ops.stop_gradient(features), centers_batch, alpha, weights,
                self.backend, per_sample=True))
        return per_sample, centers_batch
