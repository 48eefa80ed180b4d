"""`cl.formulas` directly on eager TensorFlow, JAX and PyTorch (each where it
is installed), against tests/support/reference.py: the cases of
tests/support/formula_cases.py, which tests/graph_mode/test_formulas.py runs
as graph ops.
"""

import importlib.util

import formula_cases as cases
import numpy as np
import pytest

from cl import formulas

BACKENDS = [backend for backend in (formulas.TENSORFLOW, formulas.JAX, formulas.TORCH)
            if importlib.util.find_spec(backend) is not None]
if not BACKENDS:
    pytest.skip("none of TensorFlow, JAX, PyTorch is installed", allow_module_level=True)


def to_tensor(backend, value):
    if value is None:
        return None
    if backend == formulas.JAX:
        import jax.numpy as jnp
        return jnp.asarray(value)
    if backend == formulas.TORCH:
        import torch
        return torch.as_tensor(value)
    import tensorflow as tf
    return tf.constant(value)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_per_sample_center_loss(backend, name):
    labels, features, _ = cases.CASES[name]
    table = cases.centers()
    loss = formulas.per_sample_center_loss(to_tensor(backend, features), to_tensor(backend, table[labels]),
                                           backend=backend)
    cases.check_loss(np.asarray(loss), labels, features, table)


@pytest.mark.parametrize("alpha", [cases.ALPHA, 1.0])
@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_center_update(backend, name, alpha):
    labels, features, weights = cases.CASES[name]
    table = cases.centers()
    class_ids, deltas = formulas.center_update(
        to_tensor(backend, labels), to_tensor(backend, features), to_tensor(backend, table[labels]),
        alpha, to_tensor(backend, weights), backend=backend)
    cases.check_update(np.asarray(class_ids), np.asarray(deltas), labels, features, table, alpha,
                       weights, padded=backend == formulas.JAX)




@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_class_deltas_from_the_parts_replicas_send(backend, name):
    """What replicas exchange (cl.graph.replicas): each part of the batch's
    differences c - x and counted weights, gathered, gives center_update's
    deltas; a weight counts only where its row is finite and it is > 0."""
    labels, features, weights = cases.CASES[name]
    table = cases.centers()
    half = len(labels) // 2
    differences, counted = [], []
    for part in (slice(0, half), slice(half, None)):
        part_weights = None if weights is None else to_tensor(backend, weights[part])
        counted.append(np.asarray(formulas.counted_weights(
            to_tensor(backend, features[part]), part_weights, backend=backend)))
        differences.append(table[labels[part]] - features[part])
    counted = np.concatenate(counted)
    finite = np.all(np.isfinite(features), axis=1)
    given = np.ones(len(labels)) if weights is None else weights
    np.testing.assert_array_equal(counted, np.where(finite & (given > 0), given, 0))
    assert counted.dtype == features.dtype
    class_ids, deltas = formulas.class_deltas(
        to_tensor(backend, labels), to_tensor(backend, np.concatenate(differences)),
        to_tensor(backend, counted), cases.ALPHA, backend=backend)
    cases.check_update(np.asarray(class_ids), np.asarray(deltas), labels, features, table,
                       cases.ALPHA, weights, padded=backend == formulas.JAX)
