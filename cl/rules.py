"""The rules every front-end applies to labels and sample weights, in one place.

A label is a class id: a whole number in `[0, num_classes)` (a float label
such as 2.5 or NaN is never truncated into a class). A sample weight is
finite and >= 0 (0 leaves a sample out). Features are float `[batch, dim]`,
computed in float32 (float64 stays float64; 16-bit is widened).

Each front-end enforces these the way its backend allows: the graph API
and `cl.tf2` with run-time asserts that every read and write of the table
waits for (`cl.graph.checks`), `cl.keras3` by raising, or, inside a
compiled step that cannot raise, by masking the bad samples (a NaN loss,
left out of the update). Their messages are built from the texts here.
Backend-agnostic like `cl.formulas` (TensorFlow by default, or JAX).
"""

from cl import formulas

WHOLE_NUMBERS = "class ids must be whole numbers"
WEIGHTS = "sample weights must be finite and >= 0 (use 0 to mask a sample)"
SAME_BATCH = "labels and features must have the same batch size"


def class_id_range(num_classes):
    """The range rule's text, naming num_classes."""
    return f"labels must be class ids in [0, num_classes={num_classes})"


def compute_dtype_name(dtype_name):
    """The dtype the math runs in for features of `dtype_name`."""
    return "float64" if dtype_name == "float64" else "float32"


def valid_class_ids(labels, num_classes, backend=formulas.TENSORFLOW):
    """Bool `[batch]`: which labels are whole numbers in `[0, num_classes)`
    (False for NaN). Integer labels skip the whole-number test."""
    m = formulas.math_of(backend)
    in_range = m.logical_and(labels >= 0, labels < num_classes)
    if not m.is_floating(labels):
        return in_range
    return m.logical_and(in_range, m.floor(labels) == labels)


def row_names_a_class(rows, backend=formulas.TENSORFLOW):
    """Bool `[batch]` for one-hot (or soft) float rows `[batch, C]`: which
    name a class (some entry > 0, all finite). An all-zero or NaN row, the
    usual "unlabeled" marker, would otherwise train as an arbitrary class."""
    m = formulas.math_of(backend)
    return m.logical_and(m.any_rows(rows > 0), m.all_rows(m.isfinite(rows)))


def valid_weights(weights, backend=formulas.TENSORFLOW):
    """Bool `[batch]`: which sample weights are finite and >= 0."""
    m = formulas.math_of(backend)
    return m.logical_and(m.isfinite(weights), weights >= 0)


# A Keras 3 step whose frame cl cannot read (cl.keras3_backends.keras_step).
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
