"""`cl.tf2.CenterLoss` under `tf.distribute.ParameterServerStrategy`.

With a `variable_partitioner`, a table made in the strategy's scope is a
`ShardedVariable`: consecutive blocks of rows (classes), one plain variable
each, placed round-robin on the ps tasks. Steps run on the workers
(`ClusterCoordinator.schedule`), each on its own batch, so the paper's rule
applies per step as on one device; only the table's access changes:

  * reads: a ShardedVariable's `sparse_read`, which `tf.gather` calls,
    returns the rows grouped by shard, not in the order asked (TF 2.15 and
    2.21: ids [4, 0] of 2 shards give rows 0, 4), and reading it as a tensor
    concatenates every shard (the whole [C, D] table crosses the network).
    `cl.graph.shards` (shared with the TF1 PartitionedVariable) routes each
    id to its shard, reads the batch's rows there (one `ResourceGather` per
    shard, run on its ps) and puts them back in batch order;
  * writes: the deltas are routed the same way (one `ResourceScatterSub` per
    shard). Nothing proportional to C is read or moved per step.

A partitioner that splits another axis than the rows is refused here,
before anything is made.
Without a partitioner (or with one shard) the table is one variable on a ps
and the one-device path serves it unchanged.
"""

import numbers

import tensorflow as tf

_FIX = ("Use tf.distribute.experimental.partitioners.FixedShardsPartitioner(k), "
        "MinSizePartitioner or MaxSizePartitioner, or a partitioner returning [k, 1] "
        "(k shards of the rows).")


def is_parameter_server(strategy):
    """Whether `strategy` is TF2's ParameterServerStrategy."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def check_parameter_server(strategy, num_classes, dim, what):
    """Refuses, before anything is made, what cl cannot keep exact under a
    ParameterServerStrategy: several replicas per worker (each would apply
    its own update) and a partitioner that does not split rows only."""
    if strategy.num_replicas_in_sync > 1:
        raise NotImplementedError(
            f"{what} does not support ParameterServerStrategy with "
            f"{strategy.num_replicas_in_sync} replicas per worker (GPUs): each replica "
            f"would apply its own update to the table, from part of the step's batch. "
            f"Give each worker one device (e.g. CUDA_VISIBLE_DEVICES), or use "
            f"MultiWorkerMirroredStrategy.")
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
        raise ValueError(
            f"{what}: the ParameterServerStrategy's variable_partitioner returned "
            f"{received!r} for the centers table of shape {shape.as_list()}; cl needs "
            f"the table split by rows only ([k, 1]: k >= 1 shards of the rows, each "
            f"row one class's center). {_FIX}")
