"""Batches for the direct tests of `cl.formulas`, and the checks of its
results against the numpy reference; numpy only. Shared by
tests/graph_mode/test_formulas.py (TensorFlow, graph mode) and
tests/eager/test_formulas.py (eager TensorFlow, JAX).
"""

import numpy as np
import reference

C, D = 6, 3
ALPHA = 0.5
# float32 arithmetic against the float64 reference.
TOLERANCE = 1e-5


def _features(labels, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(len(labels), D)) + np.asarray(labels)[:, None]).astype(np.float32)


def _case(labels, weights=None, nan=(), inf=(), seed=0):
    labels = np.asarray(labels, np.int32)
    features = _features(labels, seed)
    for row in nan:
        features[row, 1] = np.nan
    for row in inf:
        features[row, 0] = np.inf
    if weights is not None:
        weights = np.asarray(weights, np.float32)
    return labels, features, weights


# name: (labels, features, weights or None). Classes 0-5 exist; a batch
# names only some of them.
CASES = {
    "one_sample_per_class": _case([0, 1, 2, 3, 4, 5]),
    "duplicates": _case([1, 1, 1, 2, 2, 0, 1]),
    "absent_classes": _case([4, 0, 4, 4, 0]),
    "one_class": _case([3, 3, 3, 3]),
    "nan_rows": _case([2, 2, 3, 1], nan=[0, 2]),  # class 3: its only sample is NaN
    "inf_row": _case([5, 5, 0], inf=[1]),
    "weight_zero": _case([1, 1, 2, 2, 0], weights=[0.0, 1.0, 0.0, 2.0, 1.0]),
    "class_all_weights_zero": _case([4, 4, 1, 2, 1], weights=[0.0, 0.0, 1.0, 0.5, 2.0]),
    "fractional_weights": _case([0, 0, 3, 3, 3], weights=[0.5, 2.0, 0.25, 1.0, 3.0]),
    "nan_and_weight_zero": _case([0, 0, 5, 5], weights=[1.0, 0.0, 0.0, 1.0], nan=[0, 3]),
}


def centers(seed=1):
    """A [C, D] float32 table, not zero (so a wrong delta shows)."""
    return np.random.default_rng(seed).normal(size=(C, D)).astype(np.float32)


def excluded_classes(labels, features, weights):
    """Classes of the batch none of whose samples counts (weight 0, or
    features not all finite): their delta must be exactly 0."""
    if weights is None:
        weights = np.ones(len(labels), np.float32)
    counts = np.all(np.isfinite(features), axis=1) & (weights > 0)
    return {int(j) for j in set(labels.tolist()) if not counts[labels == j].any()}


def check_loss(loss, labels, features, table):
    """`per_sample_center_loss(features, table[labels])` against the reference
    (a NaN row's loss is NaN there too)."""
    loss = np.asarray(loss)
    assert loss.shape == (len(labels),)
    assert loss.dtype == features.dtype
    np.testing.assert_allclose(loss, reference.center_loss(labels, features, table.astype(np.float64)),
                               rtol=TOLERANCE, atol=TOLERANCE)


def check_update(class_ids, deltas, labels, features, table, alpha, weights, padded):
    """`center_update`'s `(class_ids, deltas)` against the reference.

    `padded`: JAX returns one row per sample, the padding rows repeating a
    class of the batch with a delta of exactly 0; TensorFlow one row per
    class present.
    """
    class_ids, deltas = np.asarray(class_ids), np.asarray(deltas)
    present = set(labels.tolist())
    assert set(class_ids.tolist()) == present
    assert deltas.shape == (len(labels) if padded else len(present), table.shape[1])
    if not padded:
        assert len(set(class_ids.tolist())) == len(class_ids)  # no duplicate scatter indices
    assert np.all(np.isfinite(deltas)), "a NaN/Inf sample leaked into the update"
    # At most one row per class moves it (the others are padding, exactly 0).
    for j in present:
        assert np.count_nonzero(np.any(deltas[class_ids == j] != 0, axis=1)) <= 1
    for j in excluded_classes(labels, features, weights):
        assert np.all(deltas[class_ids == j] == 0.0), f"class {j} counts no sample: delta must be exactly 0"
    updated = table.astype(np.float64)
    np.subtract.at(updated, class_ids, deltas.astype(np.float64))
    expected = reference.update_centers(labels, features.astype(np.float64), table.astype(np.float64),
                                        alpha, None if weights is None else weights.astype(np.float64))
    np.testing.assert_allclose(updated, expected, rtol=TOLERANCE, atol=TOLERANCE)
