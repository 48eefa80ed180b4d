"""Row reads and row updates of a centers table, whole or split by rows.

A TF1 table made under `variable_scope(partitioner=...)` (or with cl's
`partitioner=`) is a PartitionedVariable, and a TF2 one made under
`ParameterServerStrategy(variable_partitioner=...)` a ShardedVariable: both
are shards of consecutive rows, each a variable of its own, placed where the
device function or the strategy puts it (round robin over the ps tasks). Reading it as a tensor
would concatenate every shard, a copy of the whole table per step; here each
class id is routed to the shard that holds its row, so a step reads and
updates only the batch's rows, each on its own shard, and what travels is
the batch (B x D), never the table.

A plain table takes the same single ops as before (`tf.gather`,
`scatter_sub`); the routing exists only for partitioned ones. Also here:
the checks that a split is by rows, and ParameterServerStrategy's.
"""

import numbers

import tensorflow as tf

from cl import compat, rules


def partitioner_of(value):
    """A TF1 partitioner from a number of shards (int) or a partitioner."""
    if isinstance(value, int) and not isinstance(value, bool):
        return tf.compat.v1.fixed_size_partitioner(value)
    return value


def is_partitioned(table):
    """A TF1 PartitionedVariable (TF2's ShardedVariable: `is_sharded`)."""
    return isinstance(table, compat.partitioned_variable_class())


def is_sharded(table):
    """A TF2 ShardedVariable (ParameterServerStrategy with a partitioner)."""
    return getattr(table, "is_sharded_variable", False) is True


def shards_of(table):
    """The variables holding `table`'s rows, in row order (itself if whole).

    Raises ValueError for a table split along its feature axis: every class
    row must live whole on one shard.
    """
    if is_sharded(table):
        return list(table.variables)  # split by rows only (check_parameter_server)
    if not is_partitioned(table):
        return [table]
    shards = list(table)
    dim = table.shape.as_list()[1]
    split = [shard.shape.as_list() for shard in shards]
    if any(shape[1] != dim for shape in split):
        raise ValueError(rules.rows_only_split("cl", table.name, table.shape, f"shards {split}"))
    return shards


def _route(shards, ids):
    """(shard index, row within the shard) of each class id, from the shards'
    actual sizes (TF splits rows as evenly as it can: 10 in 3 are 4, 3, 3)."""
    rows = [shard.shape.as_list()[0] for shard in shards]
    starts, ends = [], []
    for count in rows:
        starts.append(ends[-1] if ends else 0)
        ends.append(starts[-1] + count)
    ids = tf.cast(ids, tf.int64)
    shard = tf.searchsorted(tf.constant(ends, tf.int64), ids, side="right")
    shard = tf.cast(shard, tf.int32)
    local = ids - tf.gather(tf.constant(starts, tf.int64), shard)
    return shard, local


def read_rows(table, ids):
    """`table[ids]`, `[len(ids), dim]`: a sparse gather on each shard."""
    shards = shards_of(table)
    if len(shards) == 1:
        return tf.gather(shards[0], ids)
    shard, local = _route(shards, ids)
    positions = tf.dynamic_partition(tf.range(tf.size(ids)), shard, len(shards))
    wanted = tf.dynamic_partition(local, shard, len(shards))
    rows = [tf.gather(variable, rows_of) for variable, rows_of in zip(shards, wanted)]
    return tf.dynamic_stitch(positions, rows)


def subtract_rows(table, ids, deltas):
    """`table[ids] -= deltas`, adding the rows of repeated ids, each shard's
    part by a `scatter_sub` on that shard; returns an op (None when eager)."""
    shards = shards_of(table)
    if len(shards) == 1:
        return tf.group(tf.compat.v1.scatter_sub(shards[0], ids, deltas))
    shard, local = _route(shards, ids)
    wanted = tf.dynamic_partition(local, shard, len(shards))
    parts = tf.dynamic_partition(deltas, shard, len(shards))
    return tf.group(*[tf.compat.v1.scatter_sub(variable, rows, part)
                      for variable, rows, part in zip(shards, wanted, parts)])


def is_initialized(table):
    """A bool tensor: every shard of `table` is initialised."""
    flags = [tf.compat.v1.is_variable_initialized(shard) for shard in shards_of(table)]
    return flags[0] if len(flags) == 1 else tf.reduce_all(tf.stack(flags))


def _copies_of(shard):
    """The plain variables behind `shard`: a tf.distribute variable's copies."""
    if isinstance(shard, tf.distribute.DistributedValues):
        return list(shard.distribute_strategy.experimental_local_results(shard))
    return [shard]


def _held_shape(variable):
    """The shape `variable` holds now, from its metadata: never a read of its
    values (a resource table that sparse gathers use is in copy-on-read mode,
    where a ReadVariableOp copies the whole table)."""
    handle = getattr(variable, "handle", None)
    if handle is None:  # a TF1 ref variable: Shape of the ref is no copy
        return tf.raw_ops.Shape(input=variable.op.outputs[0], out_type=tf.int64)
    return tf.raw_ops.VariableShape(input=handle, out_type=tf.int64)


_HELD_SHAPE_FIX = (
    ". A checkpoint of a table with another num_classes or dim was restored into it "
    "(TensorFlow's graph-mode restore assigns a saved variable of another shape as it "
    "is, and cl would route class ids to the wrong rows). Restore a checkpoint of the "
    "same shape, or read the saved table with cl.read_centers and assign the rows you keep.")


def held_shape_check(table, name="centers_shape"):
    """An op asserting that every shard of `table` holds the shape it is
    declared with. TensorFlow's graph-mode restore (tf.train.Checkpoint, a
    Saver, Keras 2's TF-format load_weights) assigns a saved value of another
    shape as it is; class ids are routed by the declared shapes, so the rows
    would silently belong to other classes. Run it after `is_initialized`."""
    parts = shards_of(table)
    declared = [part.shape.as_list() for part in parts]
    held = [[_held_shape(copy) for copy in _copies_of(part)] for part in parts]
    if len(held) == 1 and len(held[0]) == 1:  # a whole table on one device: fewest ops
        return tf.raw_ops.Assert(
            condition=tf.reduce_all(tf.equal(held[0][0], declared[0])), data=[
                f"cl: the centers table '{table.name}' is declared {declared[0]} but holds",
                held[0][0], _HELD_SHAPE_FIX], summarize=64, name=name)
    flat = tf.concat([shape for copies in held for shape in copies], axis=0)
    expected = [size for copies, shape in zip(held, declared) for _ in copies for size in shape]
    # Padded and cut to the expected length: a value of another rank compares
    # unequal instead of failing on the comparison's shapes.
    same = tf.logical_and(tf.equal(tf.size(flat), len(expected)), tf.reduce_all(tf.equal(
        tf.pad(flat, [[0, len(expected)]])[:len(expected)], tf.constant(expected, tf.int64))))
    rows = tf.concat([copies[0][:1] for copies in held], axis=0)
    whole_held = tf.concat([tf.reduce_sum(rows, keepdims=True), held[0][0][1:]], axis=0)
    split = [", in shards of", rows, "rows"] if len(parts) > 1 else []
    return tf.raw_ops.Assert(condition=same, data=[
        f"cl: the centers table '{table.name}' is declared {table.shape.as_list()}"
        f"{f' (shards of {[shape[0] for shape in declared]} rows)' if len(parts) > 1 else ''}"
        f" but holds", whole_held, *split, _HELD_SHAPE_FIX],
        summarize=64, name=name)  # one op: TF's Assert would add a cond (see checks)


def whole(table):
    """`table`'s value as one tensor (concatenating shards): for saving and
    get_weights, never for a training step."""
    return tf.concat(shards_of(table), axis=0) if is_partitioned(table) else table


def split_rows(table, value):
    """[(variable, rows of `value` it holds)] for assigning a whole `value`."""
    pairs, start = [], 0
    for shard in shards_of(table):
        rows = shard.shape.as_list()[0]
        pairs.append((shard, value[start:start + rows]))
        start += rows
    return pairs


def is_parameter_server(strategy):
    """Whether `strategy` is TF2's ParameterServerStrategy."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def check_parameter_server(strategy, num_classes, dim, what):
    """Refuses, before anything is made, what cl cannot keep exact under a
    ParameterServerStrategy: several replicas per worker (each would apply
    its own update) and a `variable_partitioner` that does not split rows
    only. Steps run on the workers, each on its own batch, so the rule
    applies per step as on one device; only the table's access changes
    (`read_rows` / `subtract_rows` route each id to its shard: TF's own
    `ShardedVariable.sparse_read` returns rows grouped by shard, not in the
    order asked, on TF 2.15 and 2.21)."""
    if strategy.num_replicas_in_sync > 1:
        raise NotImplementedError(rules.replicas_per_parameter_server_worker(
            what, strategy.num_replicas_in_sync))
    # (TF keeps the partitioner there in 2.15 and 2.21; if it moves, TF's own
    # check still refuses a bad split, in its words.)
    partitioner = getattr(strategy.extended, "_variable_partitioner", None)
    if partitioner is None:
        return
    shape = tf.TensorShape([num_classes, dim])
    received = partitioner(shape=shape, dtype=tf.float32)
    counts = list(received) if isinstance(received, (list, tuple)) else None
    if not counts or not all(isinstance(n, numbers.Integral) for n in counts) or \
            counts[0] < 1 or any(n != 1 for n in counts[1:]):
        raise ValueError(rules.rows_only_split(
            what, "centers", shape.as_list(),
            f"the ParameterServerStrategy's variable_partitioner returned {received!r}"))
