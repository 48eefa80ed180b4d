"""Plain-numpy reference of the paper's formulas, written loop by loop."""

import numpy as np


def center_loss(labels, features, centers):
    """1/2 ||x_i - c_{y_i}||^2 per sample."""
    return np.array([0.5 * np.sum((x - centers[y]) ** 2)
                     for y, x in zip(labels, features)])


def update_centers(labels, features, centers, alpha, weights=None):
    """c_j <- c_j - alpha * sum_{i: y_i=j} w_i (c_j - x_i) / (1 + sum w_i).

    With w = 1 this is the paper's eq. 4 (1 + n_j). Samples whose features
    are not all finite, or whose weight is 0, are skipped (cl's guard).
    """
    new = centers.copy()
    if weights is None:
        weights = np.ones(len(labels))
    keep = [np.all(np.isfinite(x)) and w > 0 for x, w in zip(features, weights)]
    for j in set(int(y) for y in labels):
        members = [(w, x) for y, x, w, ok in zip(labels, features, weights, keep)
                   if y == j and ok]
        if not members:
            continue
        delta = sum(w * (centers[j] - x) for w, x in members) / (1 + sum(w for w, _ in members))
        new[j] = centers[j] - alpha * delta
    return new
