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

    def checked(self, given, weights, num_classes, what):
        """`(ids, ok, check)` for a batch's labels as `given` and `weights` (float32
        `[batch]` or None): int32 class ids `[batch]` (0 where not ok),
        whether each sample's label and weight are valid (None: all are,
        checked now), and what `check` returns after it."""
        shown = labels.shown_labels(given, num_classes, what, self.backend)
        ok = labels.valid(shown, weights, num_classes, self.backend)
        ok, check = self.check(ok, shown, weights, num_classes, what)
        return labels.class_ids(shown, ok), ok, check

    def check(self, ok, shown, weights, num_classes, what):
        """`(ok, check)` for the valid samples `ok` of labels `shown` (as
        given) and `weights`. Where the backend can raise (eagerly): raises
        ValueError now if a label or weight breaks a rule, else returns
        `(None, None)`, every sample valid. Elsewhere: `ok`, to mask the bad
        samples with, and what later work must wait for (TensorFlow graphs)
        or carry (JAX), else None."""
        # One reduction on the device; the host reads the labels only to say
        # what is wrong.
        if not bool(keras.ops.all(ok)):
            host = keras.ops.convert_to_numpy
            labels.raise_invalid(host(shown), None if weights is None else host(weights),
                                 num_classes, what)
        return None, None

    def after(self, check, tensor):
        """`tensor`, computed only once `check` passed."""
        return tensor

    def mean(self, values):
        """The mean of `values`, `[batch]`."""
        return keras.ops.mean(values)

    def loss_after(self, check, loss):
        """The scalar `loss`, computed only once `check` passed (and, on JAX,
        carrying it: what keeps the check in the compiled step)."""
        return self.after(check, loss)

    def hold(self, check, variables):
        """Makes every later write of `variables` in this step wait for `check`."""

    def read(self, variable, ids):
        """Rows `ids` of the table, `[batch, dim]`."""
        raise NotImplementedError

    def subtract(self, variable, ids, deltas, rows):
        """`table[ids] -= deltas`, in place, adding the rows of repeated ids
        (`formulas.center_update`'s per-sample rows); `rows`: the rows at
        `ids` before (what an undo restores)."""
        raise NotImplementedError

    def term(self, variable, ids, features, alpha, weights, update, what, mean=False):
        """`(per_sample, centers_batch)`: the per-sample loss (with `mean`, its
        mean) and the rows it read (pre-update); applies the update on
        `weights`' samples if `update`. One read serves the loss, the update
        and the metrics."""
        centers_batch = keras.ops.stop_gradient(self.read(variable, ids))
        loss, deltas = formulas.center_term(
            ids, features, centers_batch, alpha, weights, self.backend, update=update,
            mean=mean)
        if update:
            self.subtract(variable, ids, deltas, centers_batch)
        return loss, centers_batch
