"""What `cl.keras3` needs from each Keras 3 backend, and from Keras itself.

Sparse reads and writes of the centers table, O(batch * dim) whatever
num_classes is: `tf.gather` / `scatter_sub` on TensorFlow (`keras.ops.take`
on a variable reads the whole table there), static-size `jnp.unique` and
`.at[].add` on JAX (`cl.keras3_jax`; in place under jit, where Keras
donates the state), `index_select` / `index_add_` on PyTorch
(`cl.keras3_torch`).

The checks on labels and sample weights: an error before anything changes
where the backend can raise, else the bad samples are masked by the caller
(NaN loss, left out of the update), and JAX warns.

Two things a layer is never handed and reads from Keras here: the
`sample_weight` of the running `fit`/`evaluate` step, and which step (or
forward pass) it runs in.
"""

import functools
import sys
import warnings
import weakref

import keras
import numpy as np
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.losses.loss import scale_loss_for_distribution

from cl import formulas, rules

_BACKENDS = {"tensorflow": formulas.TENSORFLOW, "jax": formulas.JAX, "torch": formulas.TORCH}


def math_backend():
    """cl.formulas' backend for the running Keras 3 backend."""
    name = keras.backend.backend()
    if name not in _BACKENDS:
        raise NotImplementedError(
            f"cl.keras3 supports the TensorFlow, JAX and PyTorch backends of Keras 3; "
            f"KERAS_BACKEND is {name!r}.")
    return _BACKENDS[name]


def class_ids(labels, num_classes, what):
    """`(ids, shown, ok)`, each `[batch]`, from `[batch]`/`[batch, 1]` ids or
    one-hot `[batch, C]`: int32 ids (0 where not ok), the labels as given
    for messages (-1 for a one-hot row naming no class), and whether each
    is a whole number in [0, num_classes). Checked before any int cast, so
    2.5 is never class 2 and NaN never a class."""
    labels = keras.ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[1] == num_classes and num_classes > 1:
        # A row that names no class (all zeros or NaN, an "unlabeled"
        # marker) shows as -1, refused by the range check, never class 0.
        rows = keras.ops.cast(labels, "float32")
        names_a_class = rules.row_names_a_class(rows, math_backend())
        labels = keras.ops.where(names_a_class, keras.ops.argmax(rows, axis=-1), -1)
    elif len(shape) == 2 and shape[1] == 1:
        labels = keras.ops.reshape(labels, (-1,))
    elif len(shape) != 1:
        raise ValueError(
            f"{what}: labels must be class ids [batch] or [batch, 1], or one-hot "
            f"[batch, {num_classes}]; received shape {shape}.")
    ok = rules.valid_class_ids(labels, num_classes, math_backend())  # False for NaN, 2.5
    ids = keras.ops.cast(keras.ops.where(ok, labels, keras.ops.zeros_like(labels)), "int32")
    return ids, labels, ok


def sample_weights(sample_weight, what, source):
    """float32 `[batch]`, or None."""
    if sample_weight is None:
        return None
    if not hasattr(sample_weight, "shape"):
        raise ValueError(
            f"{what}: {source} must be one weight per sample, shape [batch]; received "
            f"{type(sample_weight).__name__} (per-output weights do not reach the center "
            f"update: give the weights as the layer's third input).")
    shape = tuple(sample_weight.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise ValueError(f"{what}: {source} must have shape [batch] or [batch, 1]; "
                         f"received shape {shape}.")
    return keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,))


def invalid_message(shown, weights, num_classes):
    """What is wrong with `shown` labels / `weights` (numpy, [batch]), or None.

    `shown` are the labels as given (a float label keeps its value, NaN
    too), -1 for a one-hot row that names no class.
    """
    # The rules of cl.rules, on the numpy values the host sees.
    shown = np.asarray(shown).reshape(-1)
    whole = np.isfinite(shown) & (np.floor(shown) == shown)
    problems = []
    out = whole & ((shown < 0) | (shown >= num_classes))
    if out.any():
        hint = (" (-1: a one-hot row that names no class, all zeros or NaN; drop "
                "such samples)" if (shown[out] == -1).any() else "")
        problems.append(
            f"{rules.class_id_range(num_classes)}; received out-of-range label(s) "
            f"{shown[out][:20].tolist()} at batch position(s) "
            f"{np.flatnonzero(out)[:20].tolist()}{hint}")
    if not whole.all():
        problems.append(
            f"{rules.WHOLE_NUMBERS}; received label(s) {shown[~whole][:20].tolist()} "
            f"at batch position(s) {np.flatnonzero(~whole)[:20].tolist()}")
    if weights is not None:
        weights = np.asarray(weights).reshape(-1)
        bad = ~(np.isfinite(weights) & (weights >= 0))
        if bad.any():
            problems.append(
                f"{rules.WEIGHTS}; received {weights[bad][:20].tolist()} "
                f"at batch position(s) {np.flatnonzero(bad)[:20].tolist()}")
    return "; ".join(problems) or None


def _raise_if_invalid(shown, weights, num_classes, what):
    error = invalid_message(shown, weights, num_classes)
    if error is not None:
        raise ValueError(f"{what}: {error}. No center was changed.")


def _warn_if_invalid(shown, weights, num_classes, what):
    error = invalid_message(shown, weights, num_classes)
    if error is not None:
        warnings.warn(f"{what}: {error}. The step's loss is NaN and those samples were "
                      f"left out of its center update (raising inside a Keras step on "
                      f"JAX would lose the model's state).", RuntimeWarning, stacklevel=2)


def replica_share(loss):
    """`loss` scaled as Keras scales one replica's loss (tf.distribute)."""
    return scale_loss_for_distribution(loss)


class _Table:
    backend = None

    def table_options(self):
        """Extra `add_weight` arguments for a new centers table."""
        return {}

    def undo(self, variable):
        """Reverts this step's update where it already ran (eager torch)."""

    def require_visible_step(self):
        """Raises where a Keras step's frame (fit's sample weights) cannot be
        seen from the layer (torch.compile); elsewhere the step is plain Python."""

    def term(self, variable, ids, features, alpha, weights, update, what):
        """`(per_sample, centers_batch)`: the per-sample loss and the rows it
        read (pre-update); applies the update on `weights`' samples if
        `update`. One read serves the loss and the update."""
        centers_batch = keras.ops.stop_gradient(self.read(variable, ids))
        per_sample = formulas.per_sample_center_loss(features, centers_batch, self.backend)
        if update:
            self.subtract(variable, *formulas.center_update(
                ids, keras.ops.stop_gradient(features), centers_batch, alpha, weights,
                self.backend))
        return per_sample, centers_batch


class _TensorFlowTable(_Table):
    backend = formulas.TENSORFLOW

    def __init__(self):
        import tensorflow as tf
        self.tf = tf

    def check(self, ok, shown, weights, num_classes, what):
        """Raises now (eager), or returns an assert op that what must not run
        on bad data waits for (graph; XLA drops it: the caller masks)."""
        tf = self.tf
        if tf.executing_eagerly():
            _raise_if_invalid(shown.numpy(), None if weights is None else weights.numpy(),
                              num_classes, what)
            return None
        data = [f"{what}: labels must be whole-number class ids in [0, num_classes="
                f"{num_classes}) and sample weights >= 0; received labels:", shown]
        if weights is not None:
            data += ["weights:", weights]
        return tf.debugging.Assert(tf.reduce_all(ok), data, summarize=20)

    def after(self, check, tensor):
        """`tensor`, computed only once `check` passed."""
        if check is None:
            return tensor
        with self.tf.control_dependencies([check]):
            return self.tf.identity(tensor)

    def hold(self, check, variables):
        """Makes every later write of `variables` in this graph wait for
        `check`: a read after the check, which TensorFlow's automatic
        control dependencies order before the next write of each."""
        if check is not None:
            with self.tf.control_dependencies([check]):
                for variable in variables:
                    variable.value.read_value()

    def read(self, variable, ids):
        # variable.value is the tf.Variable (autocast off): a ResourceGather of
        # `ids` rows. keras.ops.take would read all C rows first.
        return self.tf.gather(variable.value, ids)

    def subtract(self, variable, ids, deltas):
        variable.value.scatter_sub(self.tf.IndexedSlices(deltas, ids))

    def refuse_strategy(self, what):
        from cl import keras3_replicas  # TensorFlow only: lazily
        keras3_replicas.refuse_strategy(what)

    def table_options(self):
        from cl import keras3_replicas
        return keras3_replicas.table_options()

    def term(self, variable, ids, features, alpha, weights, update, what):
        from cl import keras3_replicas
        distributed = keras3_replicas.term(variable, ids, features, alpha, weights, update, what)
        return distributed or super().term(variable, ids, features, alpha, weights, update, what)


@functools.lru_cache(maxsize=None)
def table_ops(backend):
    if backend == formulas.TORCH:
        from cl import keras3_torch  # torch only: lazily
        return keras3_torch.table(_Table, _raise_if_invalid)
    if backend == formulas.JAX:
        from cl import keras3_jax  # JAX only: lazily
        return keras3_jax.table(_Table, _raise_if_invalid, _warn_if_invalid)
    return _TensorFlowTable()


def step_token():
    """An object alive for the current forward pass only: the JAX step's
    StatelessScope, else Keras's call context (one per top-level call)."""
    return get_stateless_scope() or global_state.get_global_attribute("current_call_ctx")


class StepMemo:
    """Remembers, weakly, the step a layer last ran in."""

    def __init__(self):
        self._ref = None

    def seen(self, token):
        """True if `token` is the step remembered; remembers it."""
        if token is None:
            return False
        if self._ref is not None and self._ref() is token:
            return True
        self._ref = weakref.ref(token)
        return False


def keras_step(weights_needed=True):
    """`(model, sample_weight)` of the Keras train or test step running now
    (sample_weight includes class_weight), or `(None, None)`; raises where
    a step runs but its weights cannot be seen, if `weights_needed`.

    Keras hands them to `Model.train_step`/`test_step`, never to a layer,
    so a layer reads them from that step's frame: the one route by which
    fit's weights can reach an update made in the forward pass. A step
    traced by torch.compile (jit_compile=True on PyTorch) runs other code in
    that frame, without the step's locals: refused, never read as "no weights".
    """
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name
        if name in ("train_step", "test_step"):
            model = frame.f_locals.get("self")
            if isinstance(model, keras.Model):
                codes = [getattr(vars(cls).get(name), "__code__", None)
                         for cls in type(model).__mro__]
                if frame.f_code not in codes:
                    if weights_needed:
                        raise NotImplementedError(rules.HIDDEN_STEP.format(name=name))
                    return model, None
                return model, frame.f_locals.get("sample_weight")
        frame = frame.f_back
    return None, None

