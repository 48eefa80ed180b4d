"""The paper's formulas, as pure tensor functions.

Wen et al., "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016:

    L_C = 1/2 * sum_i ||x_i - c_{y_i}||^2           (eq. 2, here per sample)
    dL_C/dx_i = x_i - c_{y_i}                        (centers get no gradient)
    delta_c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)      (eq. 4)
    c_j <- c_j - alpha * delta_c_j      for each class j in the mini-batch

Summed per class, the per-sample rows `alpha * (c_{y_i} - x_i) / (1 + n_{y_i})`
are eq. 4: one scatter that adds the rows of repeated class ids applies it.

With per-sample weights w_i >= 0 (Keras sample_weight / class_weight) the
update is the weighted form, which is eq. 4 for w = 1:

    delta_c_j = sum_{i: y_i = j} w_i (c_j - x_i) / (1 + sum_{i: y_i = j} w_i)

so a sample of weight 0 neither moves its center nor counts in n_j.

No variables, sessions or Keras here: the front-ends (`cl.ops`, `cl.tf2`,
`cl.keras3`) own the centers table and apply the update; these functions only
compute. They are written once against a handful of tensor primitives
(`cl.backend_math`), so the same lines serve TensorFlow (the default), JAX
(`backend=JAX`) and PyTorch (`backend=TORCH`).
"""

from cl.backend_math import JAX, TENSORFLOW, TORCH, math_of

__all__ = ["JAX", "TENSORFLOW", "TORCH", "center_term", "center_update", "check_alpha",
           "check_num_classes", "class_deltas", "counted_weights", "per_sample_center_loss"]


def check_alpha(alpha):
    """The paper's center learning rate, a number in [0, 1], as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha (the center learning rate) must be a number in [0, 1]; "
            f"received {alpha!r}. The paper uses 0.5.")
    return float(alpha)


def check_weight(weight):
    """lambda, the weight of the center term: a number >= 0, as a float."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"weight (lambda) must be a number >= 0; received {weight!r}.")
    return float(weight)


def check_num_classes(value, what="num_classes"):
    """A table size (rows, or columns with what="dim"): an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1; received {value!r}.")
    return value


def per_sample_center_loss(features, centers_batch, backend=TENSORFLOW):
    """Returns `1/2 * ||x_i - c_{y_i}||^2` for each sample.

    Args:
      features: float `[batch, dim]`, the x_i.
      centers_batch: float `[batch, dim]`, row i holding c_{y_i}; same dtype.
      backend: `TENSORFLOW` (default), `JAX` or `TORCH`: whose tensors these are.

    Returns:
      `[batch]`, same dtype as `features`.
    """
    m = math_of(backend)
    return 0.5 * m.squared_norms(features - centers_batch)


def center_update(labels, features, centers_batch, alpha, weights=None, backend=TENSORFLOW,
                  per_sample=False):
    """The paper's center update for the classes present in the batch.

    Args:
      labels: int `[batch]`, class ids.
      features: float `[batch, dim]`.
      centers_batch: float `[batch, dim]`, row i holding c_{y_i}, read before
        the update (every sample of class j must see the same c_j).
      alpha: float in [0, 1], the center learning rate.
      weights: float `[batch]` >= 0, or None for all ones. A sample of weight
        0, or whose features are not all finite (NaN/Inf; or so large that
        their sum overflows), neither moves its center nor counts in n_j.
      backend: `TENSORFLOW` (default), `JAX` or `TORCH`: whose tensors these are.
      per_sample: the form of the result, below.

    Returns:
      `(ids, deltas)` such that subtracting each row of `deltas` from the
      center row its id names, adding the rows of repeated ids, is the
      paper's update. With `per_sample=True`: `ids` are `labels` and
      `deltas[i] = alpha * w_i (c_{y_i} - x_i) / (1 + sum_{k: y_k = y_i} w_k)`,
      `[batch, dim]`: one scatter that adds repeated indices applies it
      (`scatter_sub`, `index_add_`, `.at[].add`). Otherwise: `ids` are the
      classes of the batch, each once (`[k]`), and `deltas` their summed rows
      `[k, dim]`, so a scatter sees no repeated index (the same bits on
      every replica's copy). A class whose samples all have weight 0 gets a
      delta of exactly 0. JAX, per class: k is the batch size (shapes must be
      static under jit); the padding rows repeat a class of the batch with a
      delta of exactly 0, so scatter them with an add.
    """
    differences = centers_batch - features
    counted = counted_weights(features, weights, backend)
    if per_sample:
        return labels, _scaled_rows(labels, differences, alpha, counted, math_of(backend))
    return class_deltas(labels, differences, counted, alpha, backend)


def counted_weights(features, weights=None, backend=TENSORFLOW):
    """The weight each sample counts with in `center_update`: `weights` (1
    where None), 0 where the sample's features are not all finite (NaN/Inf,
    or a row sum that overflows) or its weight is not > 0. Float `[batch]`,
    the features' dtype."""
    m = math_of(backend)
    dtype = features.dtype
    # A NaN or Inf anywhere in a row makes its sum non-finite: one pass, no
    # [batch, dim] mask.
    finite = m.isfinite(m.sum_rows(features))
    if weights is None:
        return m.cast(finite, dtype)
    weights = m.cast(weights, dtype)
    return m.where(m.logical_and(finite, weights > 0), weights, m.zeros_like(weights))


def class_deltas(labels, differences, counted, alpha, backend=TENSORFLOW):
    """`center_update`'s per-class `(ids, deltas)` from the samples'
    `differences` (`centers_batch - features`, `[batch, dim]`) and `counted`
    (`counted_weights(features, weights)`): what replicas exchange to apply
    one global batch's update, each reading only its own samples' rows."""
    m = math_of(backend)
    deltas = _scaled_rows(labels, differences, alpha, counted, m)
    class_ids, sample_to_class, num_present = m.unique(labels)
    return class_ids, m.segment_sum(deltas, sample_to_class, num_present)


def center_term(labels, features, centers_batch, alpha, weights=None, backend=TENSORFLOW,
                update=True, counts=None, mean=False):
    """`(per_sample, deltas)`: `per_sample_center_loss(features, centers_batch)`
    (with `mean=True`, its mean over the batch instead: one reduction, no
    `[batch]` losses) and, if `update`, `center_update(..., per_sample=True)`'s
    deltas (else None), from one difference `features - centers_batch` (a
    [batch, dim] pass fewer than the two calls). The gradient reaches the
    features through the loss only.

    `counts`: float `[batch]`, n_{y_i} (how many of the batch's samples are
    of sample i's class), given by a caller that checked that every sample
    counts with weight 1 (`weights` None, every feature row finite, as
    `center_update` decides it): the rows are then eq. 4 as written,
    `alpha * (c_{y_i} - x_i) / (1 + n_{y_i})`, with no masks.
    """
    m = math_of(backend)
    # x - c: the features' gradient passes the difference unchanged (c - x
    # would negate it); the deltas, alpha (c - x) / ..., take -alpha.
    diff = features - centers_batch
    per_sample = m.mean_squared_norm(diff, 0.5) if mean else 0.5 * m.squared_norms(diff)
    if not update:
        return per_sample, None
    diff = m.stop_gradient(diff)
    if counts is not None:
        scale = -alpha / (1.0 + counts)
        # No scale is 0 unless alpha is, and no feature is NaN: no mask then.
        return per_sample, m.scale_rows(diff, scale) if alpha == 0 else diff * scale[:, None]
    counted = counted_weights(m.stop_gradient(features), weights, backend)
    return per_sample, _scaled_rows(labels, diff, -alpha, counted, m)


def _scaled_rows(labels, diff, alpha, weights, m):
    """center_update's per-sample rows, `diff * alpha w_i / (1 + sum w)`:
    `diff` = centers_batch - features (or its negation, with -alpha), `weights`
    counted_weights'."""
    scale = alpha * weights / (1.0 + m.class_totals(labels, weights))
    # Rows of scale 0 give 0, NaN features too (0 * NaN would be NaN).
    return m.scale_rows(diff, scale)
