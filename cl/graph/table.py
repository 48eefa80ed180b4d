"""The TF1 centers table: create or reuse, initialised check, guarded update.

A non-trainable float32 `[num_classes, dim]` variable made by
`tf.compat.v1.get_variable` in the caller's variable scope (zeros), with the
tf.distribute options of `cl.graph.replicas` under a strategy. Each owner
(raw TF1 code, a `cl.CenterLoss`, a tower set) gets its own table; the
Keras 2 front-end keeps its models' tables itself and asks `new_table`.
"""

import re
import warnings
import weakref

import tensorflow as tf

from cl import formulas, rules, tf_checkpoints
from cl.graph import checks, replicas, shards

CENTERS_NAME = tf_checkpoints.CENTERS_NAME
DEFAULT_SCOPE = tf_checkpoints.DEFAULT_SCOPE

# Per graph: (variable scope, owner) -> centers variable. The owner is None
# for raw TF1 code, or a cl.CenterLoss / TowerCenterLoss; a new owner never
# silently shares another's table.
_TABLES = weakref.WeakKeyDictionary()
# Per graph: name -> PartitionedVariable. Graph collections hold only the
# shards (`<scope>/centers/part_0`), not the table they make up.
_PARTITIONED = weakref.WeakKeyDictionary()


def centers_variable(num_classes, dim, scope=DEFAULT_SCOPE, owner=None, partitioner=None):
    """Creates, or reuses, the non-trainable centers table of `owner`.

    The table is `<variable scope>/<scope>/centers`, made by `get_variable`
    (zeros, float32, `[num_classes, dim]`) in the caller's variable scope, so
    TF1 towers in their own variable scopes get their own tables. A second
    call by the same owner reuses its table (the blog's raised "already
    exists"). `owner` is None for raw TF1 code, or a `cl.CenterLoss` used
    outside Keras compile; a different owner gets a fresh uniquified scope
    (`center_loss_1/centers`), never another's table. Keras models keep
    their tables themselves (`cl.keras2.site`). `partitioner`: see `new_table`.
    """
    graph = tf.compat.v1.get_default_graph()
    tables = _TABLES.setdefault(graph, {})
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    centers = tables.get((full_scope, owner))
    if centers is None:
        centers = new_table(num_classes, dim, scope, partitioner)
        tables[(full_scope, owner)] = centers
    if tuple(centers.shape.as_list()) != (num_classes, dim):
        raise ValueError(
            f"The centers table '{centers.name}' has shape {centers.shape} but "
            f"this call needs [{num_classes}, {dim}]. Give each differently "
            f"configured center loss its own name (name=...) or use "
            f"cl.CenterLoss.")
    return centers


def new_table(num_classes, dim, scope=DEFAULT_SCOPE, partitioner=None):
    """A new zero `[num_classes, dim]` float32 table `<scope>/centers`.

    Split by rows into a PartitionedVariable (`cl.graph.shards`) when
    `partitioner` is given or the caller's variable scope has one.

    If a table already has that name in this graph, the new one gets a
    uniquified scope (`center_loss_1/centers`) and a warning that says so.
    """
    graph = tf.compat.v1.get_default_graph()
    full_scope = "/".join(filter(None, [tf.compat.v1.get_variable_scope().name, scope]))
    # A whole table's variable, or a split one's first shard.
    names = {re.sub(r"/part_0:0$", ":0", v.name)
             for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
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
    _check_partitioning(partitioner, full_scope, [num_classes, dim])
    with tf.compat.v1.variable_scope(**scope_args):
        centers = tf.compat.v1.get_variable(
            CENTERS_NAME, shape=[num_classes, dim], dtype=tf.float32,
            initializer=unfolded_zeros, trainable=False,
            partitioner=partitioner,  # None: the variable scope's, if any
            **replicas.table_options())  # {} without a tf.distribute strategy
    if shards.is_partitioned(centers):
        _PARTITIONED.setdefault(graph, {})[centers.name] = centers
    if taken:
        new_scope = centers.name.split(":")[0][:-len(f"/{CENTERS_NAME}")]
        warnings.warn(
            f"cl: a centers table '{full_scope}/{CENTERS_NAME}' already exists "
            f"in this graph (another model or loss owns it); this one is "
            f"'{centers.name}'. Reach it with cl.centers_of(model) or "
            f"cl.get_centers('{new_scope}').", stacklevel=4)
    return centers


def unfolded_zeros(shape, dtype=tf.float32, partition_info=None):
    """Zeros for a new table (or shard) that TensorFlow cannot constant-fold.

    A session folds `zeros_initializer`'s fill into a constant it keeps for
    its whole life, and the first scatter then copies the table: twice the
    table in memory (measured: 2.08x a 10^6 x 128 table's bytes, 1.0x with
    this). `Empty(init=True)` zero-fills and is not folded.
    """
    del partition_info  # get_variable passes it; each shard is zeros alike
    return tf.raw_ops.Empty(shape=tf.TensorShape(shape).as_list(), dtype=dtype, init=True)


def _check_partitioning(partitioner, scope, shape):
    """Refuses, before any variable exists, a partitioning cl cannot use."""
    if partitioner is not None and not callable(partitioner):
        raise TypeError(
            f"cl: partitioner must be a TF1 variable partitioner, a callable such as "
            f"tf.compat.v1.fixed_size_partitioner(4); received {partitioner!r}.")
    partitioner = partitioner or tf.compat.v1.get_variable_scope().partitioner
    if partitioner is None:
        return
    parts = list(partitioner(shape=tf.TensorShape(shape), dtype=tf.float32))
    if any(count != 1 for count in parts[1:]):
        raise ValueError(rules.rows_only_split("cl", f"{scope}/{CENTERS_NAME}", shape,
                                               f"its partitioner returned {parts}"))
    if tf.distribute.has_strategy():
        raise ValueError(rules.partitioned_under_strategy(
            f"{scope}/{CENTERS_NAME}", type(tf.distribute.get_strategy()).__name__))


def partitioned_tables(graph):
    """{name: PartitionedVariable} of the row-split tables cl made in `graph`."""
    return dict(_PARTITIONED.get(graph, {}))


def initialised_check(centers):
    """One op for every step's assertions: the table is initialised (TF's
    bare 'uninitialized value' becomes an error that says what to run), then
    holds the shape it is declared with (`shards.held_shape_check`)."""
    initialised = checks.assertion(
        shards.is_initialized(centers),
        [f"cl: the centers table '{centers.name}' is not initialised. Keras: use "
         "cl.compile_model(model, ...), or after model.compile run "
         "cl.initialize(model). TF1 session: run "
         "sess.run(tf.compat.v1.global_variables_initializer()) before training."],
        "centers_initialised")
    with tf.control_dependencies([initialised]):
        return shards.held_shape_check(centers)


def apply_update(centers, labels, features, centers_batch, alpha, training,
                  weights=None):
    """The guarded scatter (NaN/Inf and weight-0 samples skipped by
    `formulas.center_update`), gated on `training`."""

    def update():
        # Per sample: the scatter adds the rows of a class (as the blog's).
        ids, deltas = formulas.center_update(
            labels, features, centers_batch, alpha, weights, per_sample=True)
        scatter = shards.subtract_rows(centers, ids, tf.cast(deltas, centers.dtype))
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
