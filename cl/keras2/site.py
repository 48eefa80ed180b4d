"""Where Keras 2's graph-mode compile meets the graph ops.

When Keras compiles a model whose loss or metric is a cl one, the loss
asks `cl.graph.sites` for the site of that compile (`cl/__init__` registers
the one finder, which builds a `CompileSite` here): the model being compiled, the
output's sample weights and Keras's learning phase. The site gives the
model its own centers tables (`cl.keras2.state`), makes them model state
(checkpoints, get/set weights: see `cl.keras2.model_methods`), and builds one
update per table per training step, even when one loss serves several
outputs.
"""

import warnings

import numpy as np
import tensorflow as tf

from cl import checkpoints, compat, rules, tf_checkpoints
from cl.graph import shards
from cl.graph import table as graph_table
from cl.keras2.state import (
    ADOPTED_ATTR,
    PENDING_ATTR,
    READS_ATTR,
    STEP_ATTR,
    TEMPLATE_ATTR,
    tables_of,
    user_learning_phase,
)


class CompileSite:
    """One cl loss or metric being built by Keras 2's compile for `model`."""

    def __init__(self, frame_name, model, frame_locals):
        self.model = model
        # Under a tf.distribute strategy, Keras compiles one clone of the
        # user's model per replica: the clones use the user's model's tables
        # (the ones users see, save and restore), never tables of their own.
        template = compat.keras_replica_template()
        if template is not None and template is not model:
            # Remembered: Keras rebuilds a clone's loss later (new sample
            # weights) outside the cloning frames.
            model.__dict__[TEMPLATE_ATTR] = template
        self.owner = model.__dict__.get(TEMPLATE_ATTR, model)
        self.backend = compat.keras_backend(model)
        self.building_loss = frame_name == compat.LOSS_FRAME
        # A new list per build of the loss sub-graph (compile, and Keras's
        # rebuild when sample-weight modes change): one pass, one update.
        self.pass_token = frame_locals.get("masks")
        self.target = frame_locals.get("target")
        if self.building_loss:
            self.endpoint = frame_locals.get("endpoint")
            # Keras's per-sample weights of this output: sample_weight,
            # class_weight and the output mask, already combined.
            self.sample_weight = frame_locals.get("sample_weight")
        else:
            endpoints = getattr(model, "_training_endpoints", None) or []
            index = frame_locals.get("i")
            self.endpoint = endpoints[index] if index is not None and index < len(endpoints) else None
            self.sample_weight = None

    @property
    def learning_phase(self):
        """Keras feeds True to the train function only: evaluate, predict
        and validation never move the centers. A phase the user set
        globally wins, under a strategy too."""
        user = user_learning_phase()
        if user is not None and tf.distribute.has_strategy():
            return user
        return self.backend.learning_phase()

    @property
    def output_loss(self):
        """The loss Keras compiled for this output (unwrapped), or None."""
        loss = getattr(self.endpoint, "loss_fn", None)
        return getattr(loss, "fn", loss)

    def table(self, num_classes, dim, scope, partitioner=None):
        """The model's table for the loss named `scope`, made on first use.

        A recompile with a loss of the same name and shape keeps the trained
        table; a different shape gets a new one, with a warning.
        """
        tables = tables_of(self.owner)
        table = tables.get(scope)
        if table is not None and tuple(table.shape.as_list()) == (num_classes, dim):
            return table
        new = graph_table.new_table(num_classes, dim, scope, partitioner)
        if table is not None:
            warnings.warn(
                f"cl: this model's centers table for '{scope}' has shape "
                f"{table.shape.as_list()}, this compile needs [{num_classes}, "
                f"{dim}]: the model gets a new zero table '{new.name}' and its "
                f"old centers are no longer part of it (or of its checkpoints).",
                stacklevel=5)
        tables[scope] = new
        self.adopt(new)
        return new

    def adopt(self, table):
        """Makes `table` model state: initialised by Keras, in checkpoints,
        and restored from values loaded before it existed."""
        tables = tables_of(self.owner)
        if not any(t is table for t in tables.values()):
            # An explicit `centers=` variable: the model owns it too.
            tables[table.name] = table
        index = [t is table for t in tables.values()].index(True)
        adopted = self.owner.__dict__.setdefault(ADOPTED_ATTR, {})
        if adopted.get(index) is table:
            return
        adopted[index] = table
        # A checkpoint dependency, not a layer weight: TF-format save_weights,
        # ModelCheckpoint and tf.train.Checkpoint carry it, and HDF5 loading
        # of the layers (order-based) is unaffected before compile. A table
        # split by rows is tracked shard by shard (`cl_centers_part_0`, ...).
        name = tf_checkpoints.tracking_name(index)
        parts = shards.shards_of(table)
        for k, variable in enumerate(parts):
            self.owner._track_trackable(
                variable, name=tf_checkpoints.part_name(name, k, len(parts)) if len(parts) > 1 else name,
                overwrite=True)
            # Keras initialises the variables it tracks, if still uninitialised,
            # the next time it takes its session: loaded weights are never wiped.
            self.backend.track_variable(variable)
        self._restore_pending(index, table)

    def _restore_pending(self, index, table):
        pending = self.owner.__dict__.get(PENDING_ATTR) or {}
        h5 = compat.h5_file_being_loaded()
        if h5 is not None:
            pending = dict(enumerate(checkpoints.read_h5_centers(h5)))
        value = pending.pop(index, None)
        if value is None:
            return
        if value.shape != tuple(table.shape.as_list()):
            raise ValueError(
                f"cl: the centers loaded for this model have shape {value.shape}, "
                f"but its table '{table.name}' is {table.shape.as_list()}: the "
                f"file was saved from a differently configured loss.")
        self.backend.batch_set_value(shards.split_rows(table, np.asarray(value, np.float32)))

    def distributed_training(self, table, training):
        """`training` for a loss on a tf.distribute table (a clone's or the
        template's), checked; `training` itself for a plain table.

        The template is compiled in cross-replica context, where no batch is
        known and its functions never run under the strategy: its loss only
        reads. In a replica's clone the learning phase is a Python int (1 in
        fit, 0 in evaluate/predict). The per-replica update cannot join
        several losses into one update, so a second loss updating the same
        table is refused.
        """
        if not isinstance(table, tf.distribute.DistributedValues):
            return training
        if tf.distribute.in_cross_replica_context():
            return False
        if isinstance(training, (int, np.integer)) and not isinstance(training, bool):
            training = bool(training)
        if training is not False:
            record = self._record(table)
            if record.get("distributed_update"):
                raise NotImplementedError(rules.two_losses_under_strategy(
                    table.name, type(tf.distribute.get_strategy()).__name__))
            record["distributed_update"] = True
        return training

    def note_read(self, table, tensor):
        """A metric's read of `table`: the update waits for it, so metrics
        always see the pre-update centers."""
        reads = self.model.__dict__.setdefault(READS_ATTR, [])
        reads.append((table, self.target, tensor))

    def _reads_of(self, table):
        """Metric reads of `table` fed by this model's current targets."""
        targets = getattr(self.model, "_targets", None) or []
        return [tensor for read_table, target, tensor in self.model.__dict__.get(READS_ATTR, [])
                if read_table is table and any(target is t for t in targets)]

    def update(self, table, labels, features, centers_batch, alpha, training, weights):
        """This step's update of `table`, on the joint batch of every cl loss
        on it in this compile (one CenterLoss on two outputs of a siamese
        model updates once, on both outputs' samples, deterministically).

        Returns an op the loss must wait for.
        """
        record = self._record(table)
        if weights is None:
            weights = tf.ones_like(labels, dtype=features.dtype)
        if record["batches"] and record["alpha"] != alpha:
            raise ValueError(
                f"cl: two losses update the table '{table.name}' with "
                f"different alpha ({record['alpha']} and {alpha}); give them "
                f"different names for a table each.")
        record["alpha"] = alpha
        record["batches"].append((labels, features, centers_batch, weights))
        joint = [tf.concat(parts, axis=0) for parts in zip(*record["batches"])]
        with tf.control_dependencies(self._reads_of(table)):
            updated = graph_table.apply_update(table, joint[0], joint[1], joint[2], alpha,
                                        training, joint[3])
        if record["hook"] is None:
            with tf.control_dependencies([updated]):
                record["hook"] = tf.no_op(name="center_update_hook")
        else:
            # The losses built earlier in this compile wait on the same hook:
            # point it at the joint update instead of the earlier partial one.
            compat.replace_control_inputs(record["hook"], [updated])
        return record["hook"]

    def _record(self, table):
        """This compile pass's record for `table` (a new pass starts fresh)."""
        token = self.pass_token
        step = self.model.__dict__.get(STEP_ATTR)
        if step is None or step["token"] is not token:
            step = {"token": token, "tables": {}}
            self.model.__dict__[STEP_ATTR] = step
        return step["tables"].setdefault(
            table.name, {"batches": [], "hook": None, "alpha": None})
