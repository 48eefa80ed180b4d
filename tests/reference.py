"""Plain-numpy reference of the paper's formulas, written loop by loop."""

import numpy as np


def center_loss(labels, features, centers):
    """1/2 ||x_i - c_{y_i}||^2 per sample."""
    return np.array([0.5 * np.sum((x - centers[y]) ** 2)
                     for y, x in zip(labels, features)])


def update_centers(labels, features, centers, alpha):
    """c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j).

    Samples whose features are not all finite are skipped (cl's guard).
    """
    new = centers.copy()
    finite = [np.all(np.isfinite(x)) for x in features]
    for j in set(int(y) for y in labels):
        members = [x for y, x, ok in zip(labels, features, finite) if y == j and ok]
        if not members:
            continue
        delta = sum(centers[j] - x for x in members) / (1 + len(members))
        new[j] = centers[j] - alpha * delta
    return new
