"""Class ids and sample weights from what Keras passes a `cl.keras3` layer,
checked by `cl.rules` and refused in its words.

Labels arrive as class ids `[batch]` / `[batch, 1]` (int, or float from
a Keras dataset) or one-hot `[batch, C]`; weights as `[batch]` /
`[batch, 1]`. Every label is checked before any int cast, so 2.5 is never
class 2 and NaN never a class. Where the backend can raise, a bad batch
raises before anything changes (`raise_invalid`); inside a step that
cannot (JAX), the caller masks the bad samples and `warn_if_invalid` says
so.
"""

import warnings

import keras

from cl import rules


def shown_labels(labels, num_classes, what, backend):
    """The labels as given, `[batch]` (-1 for a one-hot row naming no class)."""
    labels = keras.ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[1] == num_classes and num_classes > 1:
        # A row that names no class (all zeros or NaN, an "unlabeled"
        # marker) shows as -1, refused by the range check, never class 0.
        rows = keras.ops.cast(labels, "float32")
        names_a_class = rules.row_names_a_class(rows, backend)
        return keras.ops.where(names_a_class, keras.ops.argmax(rows, axis=-1), -1)
    if len(shape) == 2 and shape[1] == 1:
        return keras.ops.reshape(labels, (-1,))
    if len(shape) != 1:
        raise ValueError(rules.LABEL_SHAPE.format(what=what, num_classes=num_classes,
                                                  shape=shape))
    return labels


def valid(shown, weights, num_classes, backend):
    """Bool `[batch]`: whether each sample's label (`shown`) is a whole number
    in [0, num_classes) and its weight (if `weights`) finite and >= 0."""
    ok = rules.valid_class_ids(shown, num_classes, backend)  # False for NaN, 2.5
    if weights is not None:
        ok = keras.ops.logical_and(ok, rules.valid_weights(weights, backend))
    return ok


def class_ids(shown, ok):
    """int32 class ids of labels `shown`: 0 where not `ok` (None: all are)."""
    if ok is not None:
        shown = keras.ops.where(ok, shown, keras.ops.zeros_like(shown))
    return keras.ops.cast(shown, "int32")


def sample_weights(sample_weight, what, source):
    """float32 `[batch]`, or None; `source` names where they came from."""
    if sample_weight is None:
        return None
    if not hasattr(sample_weight, "shape"):
        raise ValueError(rules.WEIGHT_TYPE.format(what=what, source=source,
                                                  type=type(sample_weight).__name__))
    shape = tuple(sample_weight.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise ValueError(rules.WEIGHT_SHAPE.format(what=what, source=source, shape=shape))
    return keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,))


def raise_invalid(shown, weights, num_classes, what):
    """Raises the ValueError for labels `shown` and `weights` (numpy), some
    of which break a rule."""
    error = rules.invalid_message(shown, weights, num_classes)
    # Never on: the device found a sample that breaks a rule.
    raise ValueError(rules.REFUSED.format(what=what, error=error or "a label or weight "
                                          "breaks a rule"))


def warn_if_invalid(shown, weights, num_classes, what):
    """Warns (RuntimeWarning) if labels `shown` or `weights` (numpy) break a rule."""
    error = rules.invalid_message(shown, weights, num_classes)
    if error is not None:
        warnings.warn(rules.MASKED.format(what=what, error=error), RuntimeWarning,
                      stacklevel=2)
