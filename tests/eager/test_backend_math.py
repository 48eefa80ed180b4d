"""`cl.backend_math`, the operations `cl.formulas` runs on: an unknown
backend is refused; JAX's keep static shapes, so the update compiles under
jit, padding included.
"""

import formula_cases as cases
import numpy as np
import pytest

from cl import formulas


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be"):
        formulas.per_sample_center_loss(np.ones((1, 2)), np.ones((1, 2)), backend="mxnet")


@pytest.mark.parametrize("name", ["duplicates", "class_all_weights_zero", "nan_and_weight_zero"])
def test_center_update_under_jax_jit(name):
    """Static shapes: the JAX update compiles, padding included."""
    jax = pytest.importorskip("jax")
    labels, features, weights = cases.CASES[name]
    weights = np.ones(len(labels), np.float32) if weights is None else weights
    table = cases.centers()
    update = jax.jit(lambda y, x, c, w: formulas.center_update(y, x, c, cases.ALPHA, w, backend=formulas.JAX))
    class_ids, deltas = update(labels, features, table[labels], weights)
    cases.check_update(np.asarray(class_ids), np.asarray(deltas), labels, features, table, cases.ALPHA,
                       weights, padded=True)
