"""The cl state a Keras 2 model carries: its centers tables, and what the
user set that Keras hides from a compile.

The tables live on the model object itself (by loss name), so a recompile
keeps the trained centers and a new model never inherits a freed one's;
the other attributes are the compile pass's bookkeeping (`cl.keras2.site`).
"""

import collections
import functools

from cl import compat

TABLES_ATTR = "_cl_tables"  # OrderedDict: loss name -> centers variable
PENDING_ATTR = "_cl_pending_centers"  # values loaded before the tables existed
STEP_ATTR = "_cl_step"  # the compile pass's per-table update records
READS_ATTR = "_cl_metric_reads"  # (table, target, read) of cl metrics
ADOPTED_ATTR = "_cl_adopted"
TEMPLATE_ATTR = "_cl_replica_template"  # a per-replica clone -> the user model


# The learning phase set with K.set_learning_phase() when the running fit or
# evaluate began (0 or 1), else None; see remember_user_learning_phase. Not
# thread-local: MirroredStrategy builds each replica's clone in a thread of
# its own.
_USER_PHASE = {"value": None}


def user_learning_phase():
    return _USER_PHASE["value"]


def remember_user_learning_phase(method):
    """Wraps Model.fit / evaluate. Under a tf.distribute strategy Keras 2
    builds the replicas' clones inside its own learning-phase scope (1 in
    fit, 0 in evaluate), which hides a global K.set_learning_phase(0) that
    stops the update everywhere else; remember the user's value first."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        phase = compat.keras_backend(self).learning_phase()
        previous = user_learning_phase()
        _USER_PHASE["value"] = phase if isinstance(phase, int) else None
        try:
            return method(self, *args, **kwargs)
        finally:
            _USER_PHASE["value"] = previous

    return wrapper


def tables_of(model):
    """The model's OrderedDict of loss name -> centers variable."""
    return model.__dict__.setdefault(TABLES_ATTR, collections.OrderedDict())


def centers_of(model):
    """The centers variables of `model`'s cl losses, in creation order."""
    return list(model.__dict__.get(TABLES_ATTR, {}).values())
