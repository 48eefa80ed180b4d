"""`cl.keras3` on TensorFlow under a tf.distribute strategy.

Built in `MirroredStrategy.scope()` (or MultiWorkerMirroredStrategy's), the
layer's table is mirrored with ONLY_FIRST_REPLICA aggregation, and each
replica's step reads its rows from its own copy and applies, to every copy,
the update of the global batch: the replica update of the graph API and
`cl.tf2` (`cl.graph.replicas`), called here. Other strategies are refused
(OneDeviceStrategy keeps a plain table). Imported on the TensorFlow
backend only.
"""

import tensorflow as tf

from cl.graph import replicas

_ALTERNATIVE = "or cl.keras3 on one device (no strategy)"
_CREATE_HINT = " (build the model, and so its CenterLoss layer, there)"


def refuse_strategy(what):
    """Raises NotImplementedError, saying what to use, under a strategy that
    would let the copies of the centers drift apart."""
    if tf.distribute.has_strategy():
        replicas.check_strategy(tf.distribute.get_strategy(), what, _ALTERNATIVE)


def table_options():
    """Extra `add_weight` arguments for a new table: under a strategy, the
    mirrored table of `cl.graph.replicas` (every copy updated alike by cl;
    assign and restore write all of them)."""
    if tf.distribute.has_strategy():
        return dict(aggregation="only_first_replica")  # synchronization: auto, ON_WRITE
    return {}


def term(variable, ids, features, alpha, weights, update, what):
    """`(per_sample, centers_batch)` as the single-device term computes them,
    for a mirrored table inside its strategy, or None elsewhere (a plain
    table, or a read outside the strategy, which needs no replica)."""
    table = variable.value
    if not isinstance(table, tf.distribute.DistributedValues) or \
            not (tf.distribute.has_strategy() or update):
        return None
    if not replicas.is_distributed(table, update, what, _ALTERNATIVE, _CREATE_HINT):
        return None
    if tf.distribute.in_cross_replica_context():  # a read only (checked): any copy
        local = tf.distribute.get_strategy().experimental_local_results(table)[0]
    else:
        local = table  # this replica's own copy
    centers_batch = tf.stop_gradient(replicas.read_rows(local.handle, ids))
    per_sample = replicas.center_loss(table, ids, features, alpha, update, weights,
                                      update_on=None)
    return per_sample, centers_batch
