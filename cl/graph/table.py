"""The TF1 centers table: create or reuse, initialised check, guarded update.

A non-trainable float32 `[num_classes, dim]` variable made by
`tf.compat.v1.get_variable` in the caller's variable scope (zeros), with the
tf.distribute options of `cl.graph.replicas` under a strategy. Each owner
(raw TF1 code, a `cl.CenterLoss`, a tower set) gets its own table; the
Keras 2 front-end keeps its models' tables itself and asks `new_table`.
"""

import warnings
import weakref

import tensorflow as tf

from cl import checkpoints, formulas
from cl.graph import replicas

CENTERS_NAME = checkpoints.CENTERS_NAME
DEFAULT_SCOPE = checkpoints.DEFAULT_SCOPE

# Per graph: (variable scope, owner) -> centers variable. The owner is None
# for raw TF1 code, or a cl.CenterLoss / TowerCenterLoss; a new owner never
# silently shares another's table.
_TABLES = weakref.WeakKeyDictionary()


def centers_variable(num_classes, dim, scope=DEFAULT_SCOPE, owner=None):
    """Creates, or reuses, the non-trainable centers table of `owner`.

    The table is `<variable scope>/<scope>/centers`, made by `get_variable`
    (zeros, float32, `[num_classes, dim]`) in the caller's variable scope, so
    TF1 towers in their own variable scopes get their own tables. A second
    call by the same owner reuses its table (the blog's raised "already
    exists"). `owner` is None for raw TF1 code, or a `cl.CenterLoss` used
    outside Keras compile; a different owner gets a fresh uniquified scope
    (`center_loss_1/centers`), never another's table. Keras models keep
    their tables themselves (`cl.keras2.site`).
    """
    graph = tf.compat.v1.get_default_graph()
    tables = _TABLES.setdefault(graph, {})
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    centers = tables.get((full_scope, owner))
    if centers is None:
        centers = new_table(num_classes, dim, scope)
        tables[(full_scope, owner)] = centers
    if tuple(centers.shape.as_list()) != (num_classes, dim):
        raise ValueError(
            f"The centers table '{centers.name}' has shape {centers.shape} but "
            f"this call needs [{num_classes}, {dim}]. Give each differently "
            f"configured center loss its own name (name=...) or use "
            f"cl.CenterLoss.")
    return centers


def new_table(num_classes, dim, scope=DEFAULT_SCOPE):
    """A new zero `[num_classes, dim]` float32 table `<scope>/centers`.

    If a table already has that name in this graph, the new one gets a
    uniquified scope (`center_loss_1/centers`) and a warning that says so.
    """
    graph = tf.compat.v1.get_default_graph()
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    names = {v.name for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
    taken = f"{full_scope}/{CENTERS_NAME}:0" in names
    # A taken scope gets the first free `<scope>_<k>` instead, chosen here
    # rather than by variable_scope(default_name=...): Keras 2 compiles under
    # a tf.distribute strategy with scope counts that do not see the first
    # table, and would pick the taken name again.
    scope_args = dict(name_or_scope=scope, reuse=tf.compat.v1.AUTO_REUSE)
    if taken:
        index = 1
        while f"{full_scope}_{index}/{CENTERS_NAME}:0" in names:
            index += 1
        scope_args = dict(name_or_scope=f"{scope}_{index}")
    with tf.compat.v1.variable_scope(**scope_args):
        centers = tf.compat.v1.get_variable(
            CENTERS_NAME, shape=[num_classes, dim], dtype=tf.float32,
            initializer=tf.compat.v1.zeros_initializer(), trainable=False,
            **replicas.table_options())  # {} without a tf.distribute strategy
    if taken:
        new_scope = centers.name[:-len(f"/{CENTERS_NAME}:0")]
        warnings.warn(
            f"cl: a centers table '{full_scope}/{CENTERS_NAME}' already exists "
            f"in this graph (another model or loss owns it); this one is "
            f"'{centers.name}'. Reach it with cl.centers_of(model) or "
            f"cl.get_centers('{new_scope}').", stacklevel=4)
    return centers


def initialised_check(centers):
    """Turns TF's bare 'uninitialized value' into an error that says what to run."""
    return tf.compat.v1.Assert(
        tf.compat.v1.is_variable_initialized(centers),
        [f"cl: the centers table '{centers.name}' is not initialised. Keras: use "
         "cl.compile_model(model, ...), or after model.compile run "
         "cl.initialize(model). TF1 session: run "
         "sess.run(tf.compat.v1.global_variables_initializer()) before training."],
        name="centers_initialised")


def apply_update(centers, labels, features, centers_batch, alpha, training,
                  weights=None):
    """The guarded scatter (NaN/Inf and weight-0 samples skipped by
    `formulas.center_update`), gated on `training`."""

    def update():
        class_ids, deltas = formulas.center_update(
            labels, features, centers_batch, alpha, weights)
        scatter = tf.compat.v1.scatter_sub(
            centers, class_ids, tf.cast(deltas, centers.dtype))
        # Depend on the scatter, never fetch its value: on a resource
        # variable that value is a read of the whole C x D table, a copy per
        # step that would make the cost grow with num_classes.
        with tf.control_dependencies([scatter]):
            return tf.constant(True)

    if training is None or training is True:
        return update()
    if training is False:
        return tf.constant(False)
    return tf.compat.v1.cond(tf.cast(training, tf.bool), update,
                             lambda: tf.constant(False))
