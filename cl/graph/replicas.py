"""The center update across tf.distribute replicas and workers.

The paper's rule is defined on one mini-batch. With several devices the
mini-batch is the concatenation of every replica's batch, so n_j counts class
j over all of them, and every copy of the table must receive the same deltas.

tf.distribute (MirroredStrategy, both API classes, and
MultiWorkerMirroredStrategy), in each replica:

  1. read the batch's rows from this replica's own copy of the table (a
     sparse ResourceGather on the local handle: `tf.gather` of the mirrored
     variable would first copy the whole [C, D] table);
  2. compute this replica's samples' differences c_{y_i} - x_i (from those
     rows) and the weight each counts with (`formulas.counted_weights`);
  3. bring labels, differences and counted weights together (dense
     [B, D] tensors: O(B*D) bytes per step whatever C is): no replica
     reads another's rows again;
  4. compute `formulas.class_deltas` on the global batch, on the host CPU
     (GPU segment sums add in a run-dependent order). MirroredStrategy (one
     worker: every replica in one process) hands the parts to one merge_call
     that computes the deltas once for all replicas, one tensor every copy
     receives; across workers, where merge_call sees only the local
     replicas, each replica all-gathers the parts (collective ops) and
     computes the same bits on its worker's CPU;
  5. scatter those deltas into this replica's own copy, after this replica's
     reads (each replica reads and writes only its own copy, so the loss
     always sees the pre-update centers).

The graph API (`cl.ops`) and TF2's `cl.tf2.CenterLoss` both call
`center_loss` below; in a `tf.function` it runs unchanged (automatic control
dependencies then run the update whatever the caller fetches, so TF2 passes
`update_on=None`: no tie). `cl.keras3` on TensorFlow calls `read_and_update`
and computes its loss and metrics from the rows it read. TF1 towers without
tf.distribute are `cl.towers.TowerCenterLoss`.
"""

import tensorflow as tf

from cl import formulas, rules
from cl.graph import ties

# The table keeps one copy per replica, all updated alike by cl; ONLY_FIRST_REPLICA
# makes any update through the variable's own API (assign in replica context,
# restore) keep the copies equal instead of summing them.
TABLE_OPTIONS = dict(aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                     synchronization=tf.VariableSynchronization.ON_WRITE)


GRAPH_ALTERNATIVE = "or cl.TowerCenterLoss without a strategy"
GRAPH_CREATE_HINT = " (or let center_loss create it inside strategy.run)"


# Strategies whose merge_call sees every replica (one process).
_ONE_WORKER = (tf.distribute.MirroredStrategy, tf.compat.v1.distribute.MirroredStrategy)


def _supported_strategies():
    names = [(tf.distribute, "MirroredStrategy"),
             (tf.distribute, "MultiWorkerMirroredStrategy"),
             (tf.distribute.experimental, "MultiWorkerMirroredStrategy"),
             (tf.compat.v1.distribute, "MirroredStrategy"),
             (tf.compat.v1.distribute.experimental, "MultiWorkerMirroredStrategy")]
    return tuple(getattr(module, name) for module, name in names if hasattr(module, name))


def table_options():
    """Extra `get_variable` arguments for a new centers table: none without
    a strategy (the single-device table is unchanged), else the above."""
    return dict(TABLE_OPTIONS) if tf.distribute.has_strategy() else {}


def _unsupported(strategy, what, alternative):
    return NotImplementedError(rules.unsupported_strategy(
        what, type(strategy).__name__, strategy.num_replicas_in_sync, alternative))


def check_strategy(strategy, what="cl.center_loss", alternative=GRAPH_ALTERNATIVE):
    """Raises NotImplementedError, saying what to use, unless `strategy`
    keeps a table made in its scope exact: MirroredStrategy or
    MultiWorkerMirroredStrategy (either API class), or OneDeviceStrategy."""
    one_device = (tf.distribute.OneDeviceStrategy, tf.compat.v1.distribute.OneDeviceStrategy)
    if not isinstance(strategy, _supported_strategies() + one_device):
        raise _unsupported(strategy, what, alternative)


def is_distributed(centers, training, what="cl.center_loss",
                   alternative=GRAPH_ALTERNATIVE, create_hint=GRAPH_CREATE_HINT):
    """Whether `center_loss` must take the cross-replica path for `centers`.

    False for plain code (no strategy, plain table) and for a one-replica
    strategy with a plain table (OneDeviceStrategy). Raises, saying what to
    do, for every case whose update would silently drift or crash; `what`,
    `alternative` and `create_hint` word the messages for the front-end.
    """
    mirrored = isinstance(centers, tf.distribute.DistributedValues)
    if not tf.distribute.has_strategy():
        if mirrored:
            raise RuntimeError(rules.table_outside_strategy(what, centers.name))
        return False
    strategy = tf.distribute.get_strategy()
    if not mirrored and strategy.num_replicas_in_sync == 1:
        return False
    if not isinstance(strategy, _supported_strategies()):
        raise _unsupported(strategy, what, alternative)
    if not mirrored:
        raise ValueError(rules.plain_table_under_strategy(
            what, centers.name, strategy.num_replicas_in_sync, create_hint))
    if tf.distribute.in_cross_replica_context() and training is not False:
        raise RuntimeError(rules.cross_replica_update(what, type(strategy).__name__))
    return True


def read_rows(handle, labels):
    """Rows `labels` of the variable behind `handle`, read sparsely."""
    return tf.raw_ops.ResourceGather(resource=handle, indices=labels,
                                     dtype=tf.float32)


def _host_cpu(device):
    """The CPU of `device`'s worker (the device itself if it is a CPU)."""
    spec = tf.DeviceSpec.from_string(device or "")
    if spec.device_type in (None, "CPU"):
        return spec.to_string()
    return spec.replace(device_type="CPU", device_index=0).to_string()


def read_and_update(centers, labels, features, alpha, training, weights=None):
    """`(rows, updated)`: this replica's rows `labels` of `centers` (float32
    `[batch, dim]`, read once, before the update, no gradient) and a bool
    tensor that is true once every copy got the global batch's update (None
    when `training` is False).

    Called inside `strategy.run` once `is_distributed` said so, with checked
    labels and features already in their compute dtype. `training` is
    None/True (update), False (read only) or a bool tensor; the merge or
    all-gather runs either way (neither may run inside a `tf.cond`), and
    only this replica's scatter is gated. The rows serve the caller's loss (and
    Keras 3's metrics): nothing reads them again.
    """
    if tf.distribute.in_cross_replica_context():
        # training is False here (checked): any copy holds the same centers.
        local = tf.distribute.get_strategy().experimental_local_results(centers)[0]
        handle = local.handle
    else:
        handle = centers.handle  # this replica's own copy
    rows = tf.stop_gradient(read_rows(handle, labels))
    if training is False:
        return rows, None

    # Each replica gives its samples' labels, differences c - x (from its
    # own copy's rows: the copies are equal) and counted weights; every
    # replica then applies the global batch's update to its copy without
    # reading the other replicas' rows.
    dtype = features.dtype
    features = tf.stop_gradient(features)
    if weights is not None:
        weights = tf.cast(tf.stop_gradient(weights), dtype)
    parts = [tf.cast(labels, tf.int64), tf.cast(rows, dtype) - features,
             formulas.counted_weights(features, weights)]
    # (A tf.function's captured handle may carry no device; the copy does.)
    host = _host_cpu(handle.device or centers.device)
    context = tf.distribute.get_replica_context()
    if isinstance(tf.distribute.get_strategy(), _ONE_WORKER):
        def global_deltas(strategy, *per_replica):  # once, for every replica
            with tf.device(host):
                return formulas.class_deltas(
                    *[tf.concat(strategy.experimental_local_results(part), axis=0)
                      for part in per_replica], alpha)
        class_ids, deltas = context.merge_call(global_deltas, args=parts)
    else:
        global_parts = context.all_gather(parts, axis=0)
        with tf.device(host):
            class_ids, deltas = formulas.class_deltas(*global_parts, alpha)

    def update():
        # Write this copy only after this replica's read of it.
        with tf.control_dependencies([rows]):
            scatter = tf.raw_ops.ResourceScatterSub(
                resource=handle, indices=class_ids,
                updates=tf.cast(deltas, tf.float32))
        with tf.control_dependencies([scatter]):
            return tf.constant(True)

    if training is None or training is True:
        return rows, update()
    return rows, tf.compat.v1.cond(tf.cast(training, tf.bool), update,
                                   lambda: tf.constant(False))


def center_loss(centers, labels, features, alpha, training, weights=None,
                update_on=ties.LOSS):
    """Per-sample loss of this replica, updating every copy from the global
    batch (`read_and_update`). `update_on`: how the loss ties the update in
    a TF1 graph (`cl.graph.ties`), or None in TF2 code, whose automatic
    control dependencies run it untied.
    """
    rows, updated = read_and_update(centers, labels, features, alpha, training, weights)
    rows = tf.cast(rows, features.dtype)

    def per_sample(tied_features):
        return formulas.per_sample_center_loss(tied_features, rows)

    if updated is None or update_on is None:
        return per_sample(features)
    # Every replica's gradient (and, by default, loss) waits for the update,
    # so each replica gives its parts to the update in every training step.
    return ties.tie(per_sample, features, updated, update_on)
