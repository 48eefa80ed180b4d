"""What a `cl.keras3` layer reads from the running Keras step, which Keras
never hands a layer: fit's `sample_weight`, which step (or forward pass) it
runs in, whether Keras runs it statelessly (a JAX step), how Keras scales
one replica's loss, and the layers of a model.

The only module of `cl` that uses Keras's internals (`keras.src`, the
frame of `Model.train_step`, `_flatten_layers`): when Keras changes them,
this module fails to import or tests/eager/test_keras3_step.py's
`test_step_reads_what_keras_runs` fails.
"""

import sys
import weakref

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.losses.loss import scale_loss_for_distribution

from cl import rules


def stateless_scope():
    """Keras's StatelessScope running now (a JAX step, a stateless call), or None."""
    return get_stateless_scope()


def replica_share(loss):
    """`loss` scaled as Keras scales one replica's loss (tf.distribute)."""
    return scale_loss_for_distribution(loss)


def layers_of(model):
    """Every layer inside `model`, nested ones too."""
    return model._flatten_layers()


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
