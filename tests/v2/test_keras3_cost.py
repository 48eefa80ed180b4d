"""What one `cl.keras3.CenterLoss.term` costs, counted, never timed (issue
24 item 6): on the backend KERAS_BACKEND names, the operations one training
call of the term runs (PyTorch: aten calls seen by torch.profiler; JAX: the
equations of the jitted term's jaxpr, and its effects; TensorFlow: the ops
of the term's traced tf.function) stay under a ceiling set from the count
measured when the term was cut down, with a small margin, so that a
regression shows here rather than in a benchmark. Each test also checks the
call's loss and update against the numpy reference, so the count is of a
term that is right.

Counts measured (these sizes; the code before issue 24's Keras 3 work ->
after): PyTorch 167 -> 90 aten calls; JAX 67 -> 62 equations and a debug
effect -> none; TensorFlow 75 -> 70 ops.
"""

import collections

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip

keras = keras3_or_skip()

from cl.keras3 import CenterLoss  # noqa: E402

C, D, B, ALPHA, WEIGHT = 1000, 16, 64, 0.5, 0.01
BACKEND = keras.backend.backend()
# The counts measured after the cut, plus a margin of a few operations.
TORCH_ATEN_CALLS = 96
JAX_EQUATIONS = 64
TENSORFLOW_OPS = 72


def batch(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, B).astype("int32")
    labels[:8] = labels[0]  # a class with several samples
    features = rng.normal(size=(B, D)).astype("float32")
    return labels, features


def built_layer():
    layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT)
    layer.build([(None, D), (None,)])
    rng = np.random.default_rng(1)
    layer.centers.assign(rng.normal(size=(C, D)).astype("float32"))  # not zero: a wrong delta shows
    return layer


def centers_of(layer):
    return keras.ops.convert_to_numpy(layer.centers.value).copy()


def check_against_reference(loss, layer, before, labels, features):
    expected = WEIGHT * np.mean(reference.center_loss(labels, features, before.astype(np.float64)))
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), expected, rtol=1e-5)
    np.testing.assert_allclose(centers_of(layer),
                               reference.update_centers(labels, features, before, ALPHA),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="aten calls are PyTorch's")
def test_torch_term_makes_few_aten_calls():
    """issue 24 item 6: eager torch pays per op. One training call of the term
    (features with a gradient, as in a step): at most TORCH_ATEN_CALLS aten
    calls, where it made 167 (the label and weight checks read back to
    numpy every step, keras.ops casts, [batch, dim] masks, a second read of
    the rows for the undo)."""
    import torch
    from torch.profiler import profile
    layer = built_layer()
    labels, features = batch()
    layer.term(torch.as_tensor(labels), torch.as_tensor(features, dtype=torch.float32))  # warm
    before = centers_of(layer)
    given = torch.as_tensor(features).requires_grad_(True)
    with profile() as prof:
        loss = layer.term(torch.as_tensor(labels), given, training=True)
    calls = [event.name for event in prof.events() if event.name.startswith("aten::")]
    assert len(calls) <= TORCH_ATEN_CALLS, (len(calls), collections.Counter(calls).most_common())
    check_against_reference(loss.detach(), layer, before, labels, features)
    loss.backward()  # the gradient reaches the features: weight * (x - c) / B
    np.testing.assert_allclose(given.grad.numpy(), WEIGHT * (features - before[labels]) / B,
                               rtol=1e-5, atol=1e-7)


def equations(jaxpr):
    """The equations of `jaxpr` and of every jaxpr inside them (cond's
    branches, jnp's inner jits)."""
    import jax.extend
    count = 0
    for equation in jaxpr.eqns:
        count += 1
        for param in equation.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(inner, jax.extend.core.ClosedJaxpr):
                    count += equations(inner.jaxpr)
                elif isinstance(inner, jax.extend.core.Jaxpr):
                    count += equations(inner)
    return count


@pytest.mark.skipif(BACKEND != "jax", reason="jaxprs are JAX's")
def test_jax_term_is_small_and_free_of_effects():
    """issue 24 item 6: the term jitted as Keras's JAX step runs it (in a
    StatelessScope): at most JAX_EQUATIONS equations, where it had 67, and
    no effect: the label check's host callback (a debug callback, an effect)
    took every step off JAX's fast dispatch path, about 0.2 ms a step."""
    import jax
    layer = built_layer()
    labels, features = batch()

    def step(table, labels, features):
        with keras.StatelessScope(state_mapping=[(layer.centers, table)]) as scope:
            loss = layer.term(labels, features, training=True)
        return scope.get_current_value(layer.centers), loss

    before = centers_of(layer)
    closed = jax.make_jaxpr(step)(layer.centers.value, labels, features)
    assert not closed.effects, closed.effects
    assert equations(closed.jaxpr) <= JAX_EQUATIONS, (equations(closed.jaxpr), closed)
    table, loss = jax.jit(step, donate_argnums=0)(layer.centers.value, labels, features)
    layer.centers.assign(table)
    check_against_reference(loss, layer, before, labels, features)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function graphs are TensorFlow's")
def test_tensorflow_term_graph_is_small():
    """issue 24 item 6: the term's traced tf.function (labels and features
    as arguments): at most TENSORFLOW_OPS ops, where it had 75 (each label
    rule computed twice, a second difference of the rows and features)."""
    import tensorflow as tf
    layer = built_layer()
    labels, features = batch()
    term = tf.function(lambda labels, features: layer.term(labels, features, training=True))
    graph = term.get_concrete_function(tf.TensorSpec([B], tf.int32),
                                       tf.TensorSpec([B, D], tf.float32)).graph
    ops = [op.type for op in graph.get_operations()]
    assert len(ops) <= TENSORFLOW_OPS, (len(ops), collections.Counter(ops).most_common())
    before = centers_of(layer)
    loss = term(tf.constant(labels), tf.constant(features))
    check_against_reference(loss, layer, before, labels, features)
