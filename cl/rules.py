"""The rules every front-end applies to labels and sample weights, in one place.

A label is a class id: a whole number in `[0, num_classes)` (a float label
such as 2.5 or NaN is never truncated into a class). A sample weight is
finite and >= 0 (0 leaves a sample out). Features are float `[batch, dim]`,
computed in float32 (float64 stays float64; 16-bit is widened).

Each front-end enforces these the way its backend allows: in TensorFlow
graphs (the graph API, `cl.tf2`, `cl.keras3` on TensorFlow) with run-time
asserts that every read and write of the table waits for
(`cl.graph.checks`), eagerly by raising (`invalid_message`, on the numpy
values a host sees), or, inside a compiled step that cannot raise, by
masking the bad samples (a NaN loss, left out of the update). Their
messages are built from the texts here, and so are `cl.keras3`'s and the
TF1 graph's refusals. Backend-agnostic like `cl.formulas` (TensorFlow by
default, JAX or PyTorch).
"""

import numpy as np

from cl import backend_math

WHOLE_NUMBERS = "class ids must be whole numbers"
WEIGHTS = "sample weights must be finite and >= 0 (use 0 to mask a sample)"
SAME_BATCH = "labels and features must have the same batch size"


def class_id_range(num_classes):
    """The range rule's text, naming num_classes."""
    return f"labels must be class ids in [0, num_classes={num_classes})"


def compute_dtype_name(dtype_name):
    """The dtype the math runs in for features of `dtype_name`."""
    return "float64" if dtype_name == "float64" else "float32"


def valid_class_ids(labels, num_classes, backend=backend_math.TENSORFLOW):
    """Bool `[batch]`: which labels are whole numbers in `[0, num_classes)`
    (False for NaN). Integer labels skip the whole-number test."""
    m = backend_math.math_of(backend)
    in_range = m.logical_and(labels >= 0, labels < num_classes)
    if not m.is_floating(labels):
        return in_range
    return m.logical_and(in_range, m.floor(labels) == labels)


def row_names_a_class(rows, backend=backend_math.TENSORFLOW):
    """Bool `[batch]` for one-hot (or soft) float rows `[batch, C]`: which
    name a class (some entry > 0, all finite). An all-zero or NaN row, the
    usual "unlabeled" marker, would otherwise train as an arbitrary class."""
    m = backend_math.math_of(backend)
    return m.logical_and(m.any_rows(rows > 0), m.all_rows(m.isfinite(rows)))


def valid_weights(weights, backend=backend_math.TENSORFLOW):
    """Bool `[batch]`: which sample weights are finite and >= 0."""
    m = backend_math.math_of(backend)
    return m.logical_and(m.isfinite(weights), weights >= 0)


def invalid_message(shown, weights, num_classes):
    """What is wrong with labels `shown` and `weights` (numpy, `[batch]`), or None.

    `shown` are the labels as given (a float label keeps its value, NaN
    too), -1 for a one-hot row that names no class; `weights` may be None.
    """
    shown = np.asarray(shown).reshape(-1)
    whole = np.isfinite(shown) & (np.floor(shown) == shown)
    problems = []
    out = whole & ((shown < 0) | (shown >= num_classes))
    if out.any():
        hint = (" (-1: a one-hot row that names no class, all zeros or NaN; drop "
                "such samples)" if (shown[out] == -1).any() else "")
        problems.append(
            f"{class_id_range(num_classes)}; received out-of-range label(s) "
            f"{shown[out][:20].tolist()} at batch position(s) "
            f"{np.flatnonzero(out)[:20].tolist()}{hint}")
    if not whole.all():
        problems.append(
            f"{WHOLE_NUMBERS}; received label(s) {shown[~whole][:20].tolist()} "
            f"at batch position(s) {np.flatnonzero(~whole)[:20].tolist()}")
    if weights is not None:
        weights = np.asarray(weights).reshape(-1)
        bad = ~(np.isfinite(weights) & (weights >= 0))
        if bad.any():
            problems.append(
                f"{WEIGHTS}; received {weights[bad][:20].tolist()} "
                f"at batch position(s) {np.flatnonzero(bad)[:20].tolist()}")
    return "; ".join(problems) or None


# The TF1 graph's refusals (cl.graph, cl.ops): one table, one update per run.
def second_update(what, table, first):
    """A second call that would update `table` in the same graph."""
    return (
        f"{what}: the centers table '{table}' is already updated by another call in "
        f"this graph ({first}); a second updating call would apply a second update in "
        f"the same session.run, in an order TensorFlow picks, sometimes both from the "
        f"same read. Call the center loss once, on the batches concatenated along the "
        f"batch axis (tf.concat of both heads' or siamese branches' features and "
        f"labels); for towers on several devices use cl.TowerCenterLoss; for an "
        f"evaluation tower or a serving output pass training=False; if this call is "
        f"inside tf.recompute_grad (which runs the function again for the gradient), "
        f"compute the center loss outside the recomputed function; to build a new "
        f"model (a k-fold loop), use a new tf.Graph() or a new name= for its table.")


def control_flow_body(what, body):
    """A graph-mode center loss built inside a loop or conditional `body`."""
    if body == "loop":
        where = ("a loop body (tf.while_loop, tf.map_fn, tf.scan, tf.foldl): each "
                 "iteration would apply its own update, iterations racing on the table "
                 "under TF1 control flow, and sess.run(train_op) alone would never run it")
        fix = ("Call it once, outside the loop, on the features and labels the loop "
               "produced (e.g. map_fn's stacked outputs, or a TensorArray's stack()).")
    else:
        where = ("a conditional branch (tf.cond, tf.case, tf.switch_case): the update "
                 "would run only with that branch, and sess.run(train_op) alone would "
                 "never run it")
        fix = ("Call it outside the conditional and pass its predicate as "
               "training=<bool tensor>: the update runs only when it is true, the loss "
               "is computed either way.")
    return f"{what} was called inside {where}. {fix}"


# cl.keras3's refusals. `what` names the layer (CenterLoss 'name').
KERAS3_BACKEND = ("cl.keras3 supports the TensorFlow, JAX and PyTorch backends of Keras 3; "
                  "KERAS_BACKEND is {name!r}.")
AUTOCAST = "CenterLoss uses its embedding as given: autocast=True is refused."
UNKNOWN_DIM = ("{what}: the embedding dimension must be known (it sizes the centers "
               "table); received shape {shape}.")
EMBEDDING_SHAPE = "{what}: the embedding must have shape [batch, dim]; received shape {shape}."
LABEL_SHAPE = ("{what}: labels must be class ids [batch] or [batch, 1], or one-hot "
               "[batch, {num_classes}]; received shape {shape}.")
WEIGHT_TYPE = ("{what}: {source} must be one weight per sample, shape [batch]; received "
               "{type} (per-output weights do not reach the center update: give the "
               "weights as the layer's third input).")
WEIGHT_SHAPE = "{what}: {source} must have shape [batch] or [batch, 1]; received shape {shape}."
# After invalid_message's text: raised before any change, or (a Keras step on
# JAX, which cannot raise) warned about while the bad samples are masked.
REFUSED = "{what}: {error}. No center was changed."
MASKED = ("{what}: {error}. The step's loss is NaN and those samples were left out of "
          "its center update (raising inside a Keras step on JAX would lose the model's "
          "state).")
# Ends cl.graph.replicas' strategy refusals for a Keras 3 layer.
KERAS3_ALTERNATIVE = "or cl.keras3 on one device (no strategy)"
KERAS3_CREATE_HINT = " (build the model, and so its CenterLoss layer, there)"

# A Keras 3 step whose frame cl cannot read (cl.keras3.step.keras_step).
HIDDEN_STEP = (
    "cl.keras3.CenterLoss: Keras's {name} runs here as code compiled by "
    "torch.compile (jit_compile=True on the PyTorch backend), which hides fit's "
    "sample_weight / class_weight from the layer: the centers would be updated "
    "unweighted. Compile with jit_compile=False (Keras's default on PyTorch), or "
    "use cl.keras3.CenterLossModel, which receives them from Keras's compute_loss.")

# A Keras 3 layer called twice with labels (cl.keras3).
SECOND_CALL = (
    "{what} was called a second time with labels {where}; its second update would start "
    "from centers the first already moved. Call it once, on the embeddings concatenated "
    "along the batch axis (and their labels): one update on all samples, one loss from "
    "the pre-update centers.")

# cl.keras3.CenterLossModel's backbone; `got` names what it returned.
BACKBONE_OUTPUTS = "CenterLossModel: backbone must output (logits, embedding); it returned {got}."


# Tables split by rows (cl.graph.shards): every class row lives whole on one shard.
def rows_only_split(what, name, shape, received):
    """A table `name` of `shape` split otherwise than by rows; `received`
    says how (the shards' shapes, or what the partitioner returned)."""
    return (
        f"{what}: the centers table '{name}' {list(shape)} would be split otherwise than "
        f"by rows ({received}); cl needs shards of whole rows, so that a class's "
        f"center lives on one shard. Use a partitioner that splits axis 0 only: "
        f"tf.compat.v1.fixed_size_partitioner(num_shards) or "
        f"tf.compat.v1.min_max_variable_partitioner(max_partitions, axis=0) (TF1), "
        f"tf.distribute.experimental.partitioners.FixedShardsPartitioner(k), "
        f"MinSizePartitioner or MaxSizePartitioner (ParameterServerStrategy).")


# tf.distribute (cl.graph.replicas, and the front-ends that use it). `what`
# names the caller; `alternative` what to use instead; `create_hint` where
# to create the table.
def unsupported_strategy(what, strategy, replicas, alternative):
    """A strategy under which the replicas' copies of the table would drift."""
    return (
        f"{what} does not support {strategy} ({replicas} replicas): its replicas' "
        f"centers would drift apart. Use tf.distribute.MirroredStrategy, "
        f"MultiWorkerMirroredStrategy, {alternative}.")


def table_outside_strategy(what, table):
    return (f"{what}: the centers table '{table}' belongs to a tf.distribute strategy "
            f"but is used outside it; call the loss inside strategy.run (or "
            f"call_for_each_replica).")


def plain_table_under_strategy(what, table, replicas, create_hint):
    return (f"{what}: the centers table '{table}' is a plain variable shared by "
            f"{replicas} replicas, so each replica would update it separately. Create "
            f"it inside strategy.scope(){create_hint}.")


def cross_replica_update(what, strategy):
    return (f"{what} was called in the cross-replica context of {strategy} (inside "
            f"strategy.scope() but outside strategy.run), where no replica's batch is "
            f"known. Call it inside strategy.run / call_for_each_replica, or pass "
            f"training=False for a loss that reads the centers without updating them.")


def partitioned_under_strategy(table, strategy):
    return (f"cl: the centers table '{table}' would be partitioned under {strategy}, "
            f"which keeps a whole copy of it per replica. Split tables by rows with "
            f"replica_device_setter and parameter servers (TF1), or "
            f"ParameterServerStrategy(variable_partitioner=...) with cl.tf2; under "
            f"MirroredStrategy build the loss outside the partitioned variable scope.")


def replicas_per_parameter_server_worker(what, replicas):
    return (f"{what} does not support ParameterServerStrategy with {replicas} replicas "
            f"per worker (GPUs): each replica would apply its own update to the table, "
            f"from part of the step's batch. Give each worker one device (e.g. "
            f"CUDA_VISIBLE_DEVICES), or use MultiWorkerMirroredStrategy.")


def two_losses_under_strategy(table, strategy):
    return (f"cl: two losses update the centers table '{table}' under {strategy}; under "
            f"a tf.distribute strategy each table can be updated by one loss on one "
            f"output. Give the losses different names (a table each), or train on one "
            f"device.")


def center_metrics_under_strategy(strategy):
    return (f"cl: the center metrics (center_distance, center_ratio) are not supported "
            f"under {strategy}: their read of the centers would race the replicas' "
            f"update. Compile without them, or evaluate them on a model compiled "
            f"outside the strategy.")
