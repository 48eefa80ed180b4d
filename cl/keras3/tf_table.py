"""The centers table of `cl.keras3` on the TensorFlow backend.

Reads are `tf.gather` of the variable (a sparse ResourceGather:
`keras.ops.take` would read the whole table first), writes `scatter_sub`
of the batch's classes. The checks are `cl.graph.checks`', those of every
TensorFlow front-end: in a graph, asserts that the step's writes wait for
(XLA drops them: the caller masks the bad samples); eagerly, the
ValueError the other backends raise.

Built in `MirroredStrategy.scope()` (or MultiWorkerMirroredStrategy's),
the table is mirrored with ONLY_FIRST_REPLICA aggregation, and each
replica's step is `cl.graph.replicas.read_and_update`, the replica update
of the graph API and `cl.tf2`: it reads the replica's rows from its own
copy (the loss and metrics use those rows, read once) and applies, to
every copy, the update of the global batch. Other strategies are refused
(OneDeviceStrategy keeps a plain table). Imported on TensorFlow only.
"""

import tensorflow as tf

from cl import formulas, rules
from cl.backend_math import TENSORFLOW
from cl.graph import checks, replicas
from cl.keras3 import labels
from cl.keras3.table import Table


class TensorFlowTable(Table):
    backend = TENSORFLOW

    def table_options(self):
        # Under a strategy: the mirrored table of cl.graph.replicas (every copy
        # updated alike by cl; assign and restore write all of them).
        if tf.distribute.has_strategy():
            return dict(aggregation="only_first_replica")  # synchronization: auto, ON_WRITE
        return {}

    def refuse_strategy(self, what):
        if tf.distribute.has_strategy():
            replicas.check_strategy(tf.distribute.get_strategy(), what,
                                    rules.KERAS3_ALTERNATIVE)

    def checked(self, given, weights, num_classes, what):
        if tf.executing_eagerly():
            return super().checked(given, weights, num_classes, what)
        # In a graph: the asserts' own masks are the valid samples.
        shown = labels.shown_labels(given, num_classes, what, TENSORFLOW)
        ok, labels_assert = checks.class_id_checks(shown, num_classes, what)
        asserts = [labels_assert]
        if weights is not None:
            weights_ok, weights_assert = checks.weight_checks(weights, what)
            ok = tf.logical_and(ok, weights_ok)
            asserts.append(weights_assert)
        return labels.class_ids(shown, ok), ok, asserts

    def after(self, check, tensor):
        if not check:
            return tensor
        with tf.control_dependencies(check):
            return tf.identity(tensor)

    def hold(self, check, variables):
        # A read after the check, which TensorFlow's automatic control
        # dependencies order before the next write of each variable.
        if check:
            with tf.control_dependencies(check):
                for variable in variables:
                    variable.value.read_value()

    def read(self, variable, ids):
        # variable.value is the tf.Variable (autocast off): a ResourceGather of `ids` rows.
        return tf.gather(variable.value, ids)

    def subtract(self, variable, ids, deltas, rows):
        variable.value.scatter_sub(tf.IndexedSlices(deltas, ids))

    def term(self, variable, ids, features, alpha, weights, update, what, mean=False):
        table = variable.value
        # A mirrored table inside its strategy (a read outside it needs no replica).
        if isinstance(table, tf.distribute.DistributedValues) and \
                (tf.distribute.has_strategy() or update) and \
                replicas.is_distributed(table, update, what, rules.KERAS3_ALTERNATIVE,
                                        rules.KERAS3_CREATE_HINT):
            rows, _ = replicas.read_and_update(table, ids, features, alpha, update, weights)
            per_sample = formulas.per_sample_center_loss(features, rows)
            return (tf.reduce_mean(per_sample) if mean else per_sample), rows
        return super().term(variable, ids, features, alpha, weights, update, what, mean)
