"""The batches of a step, per replica: shared by the replica and worker
programs of tests/scripts/ that tests/graph_mode/test_replicas.py runs
(imported after they put tests/support on sys.path).

Replica 0 draws classes 0-4, replica 1 classes 3-7: 0-2 and 5-7 are each on
one replica only, 8-9 never appear. Sizes are uneven and sometimes 0; a NaN
sample and weight-0 samples appear on some steps. The largest batch is 5 at
every step: graph-mode collective ops (MultiWorkerMirroredStrategy) cannot
change shape between steps (tensorflow#34250); the MirroredStrategy script
adds steps where it changes (its own `sizes`).
"""

import numpy as np

SIZES = [(5, 3), (0, 5), (5, 0), (5, 5), (2, 5), (1, 5)]


def step_batches(rng, step, num_dims, sizes=SIZES):
    """`(labels, features, weights)`, each a list of the 2 replicas' arrays."""
    sizes = sizes[step % len(sizes)]
    labels = [rng.integers(0, 5, sizes[0]), rng.integers(3, 8, sizes[1])]
    features = [(rng.normal(size=(n, num_dims)) + y[:, None]).astype(np.float32)
                for n, y in zip(sizes, labels)]
    weights = [rng.choice([0.0, 0.5, 1.0, 2.0], n).astype(np.float32) for n in sizes]
    if step == 3:
        features[1][2, 0] = np.nan
    return labels, features, weights
