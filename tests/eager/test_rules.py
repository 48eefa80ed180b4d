"""`cl.rules`: the label and weight rules every front-end applies, on each
backend present (TensorFlow, JAX), and the same words in the front-ends'
refusals (the graph API's: tests/graph_mode/test_ops.py)."""

import importlib.util

import numpy as np
import pytest

from cl import formulas, rules

BACKENDS = [backend for backend, module in ((formulas.TENSORFLOW, "tensorflow"),
                                            (formulas.JAX, "jax"))
            if importlib.util.find_spec(module) is not None]
C = 4


def tensor(values, dtype, backend):
    if backend == formulas.TENSORFLOW:
        import tensorflow as tf
        return tf.constant(values, dtype)
    import jax.numpy as jnp
    return jnp.asarray(values, dtype)


def numpy(value):
    return np.asarray(value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_ids_are_whole_numbers_in_range(backend):
    floats = tensor([0.0, 3.0, 2.5, -1.0, 4.0, np.nan, np.inf, 1.0], "float32", backend)
    assert numpy(rules.valid_class_ids(floats, C, backend)).tolist() == [
        True, True, False, False, False, False, False, True]
    ints = tensor([0, 3, -1, 4, 2], "int32", backend)
    assert numpy(rules.valid_class_ids(ints, C, backend)).tolist() == [
        True, True, False, False, True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_are_finite_and_not_negative(backend):
    weights = tensor([0.0, 1.5, -0.5, np.nan, np.inf, 2.0], "float32", backend)
    assert numpy(rules.valid_weights(weights, backend)).tolist() == [
        True, True, False, False, False, True]


def test_texts_and_dtypes():
    assert rules.class_id_range(7) == "labels must be class ids in [0, num_classes=7)"
    assert "whole numbers" in rules.WHOLE_NUMBERS and ">= 0" in rules.WEIGHTS
    assert [rules.compute_dtype_name(d) for d in ("float16", "bfloat16", "float32", "float64")] \
        == ["float32", "float32", "float32", "float64"]


def test_tf2_refuses_in_the_rule_s_words():
    tf = pytest.importorskip("tensorflow")
    import cl.tf2
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        cl.tf2.CenterLoss(C, 2)(tf.constant([0, 9]), tf.zeros([2, 2]))
    assert rules.class_id_range(C) in str(error.value)


def test_keras3_refuses_in_the_rule_s_words():
    from conftest import keras3_or_skip
    keras3_or_skip()
    import cl.keras3
    layer = cl.keras3.CenterLoss(C)
    layer.build([(2, 2), (2,)])
    with pytest.raises(ValueError) as error:
        layer.term(np.array([0, 9]), np.zeros((2, 2), "float32"))
    assert rules.class_id_range(C) in str(error.value)
    with pytest.raises(ValueError) as error:
        layer.term(np.array([0.0, 2.5]), np.zeros((2, 2), "float32"))
    assert rules.WHOLE_NUMBERS in str(error.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_rows_name_a_class(backend):
    rows = tensor([[0, 1, 0], [0, 0, 0], [np.nan, 1, 0], [0.1, 0.8, 0.1]], "float32", backend)
    assert numpy(rules.row_names_a_class(rows, backend)).tolist() == [True, False, False, True]


def test_invalid_message_names_each_broken_rule():
    """Issue 22 item 2: the host-side check every Keras 3 backend raises (or,
    JAX in a step, warns) with lives in cl.rules, in the rules' words."""
    assert rules.invalid_message(np.array([0, 3, 1]), np.array([1.0, 0.0, 2.0]), C) is None
    assert rules.invalid_message(np.array([0.0, 2.0]), None, C) is None
    message = rules.invalid_message(np.array([0, 9, 2.5, np.nan, -1, 1]),
                                    np.array([1, 1, 1, 1, 1, -1.0]), C)
    assert message == (
        f"{rules.class_id_range(C)}; received out-of-range label(s) [9.0, -1.0] at batch "
        f"position(s) [1, 4] (-1: a one-hot row that names no class, all zeros or NaN; drop "
        f"such samples); {rules.WHOLE_NUMBERS}; received label(s) [2.5, nan] at batch "
        f"position(s) [2, 3]; {rules.WEIGHTS}; received [-1.0] at batch position(s) [5]")


def test_keras3_graph_step_refuses_in_the_rule_s_words():
    """Issue 22 item 2: on TensorFlow a compiled Keras 3 step checks with
    cl.graph.checks, the checks of every TensorFlow front-end."""
    from conftest import keras3_or_skip
    keras = keras3_or_skip()
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's graph asserts")
    import tensorflow as tf

    import cl.keras3
    x_in, y_in, w_in = keras.Input((2,)), keras.Input((), dtype="float32"), keras.Input(())
    embedding = cl.keras3.CenterLoss(C)([x_in, y_in, w_in])
    model = keras.Model([x_in, y_in, w_in], keras.layers.Dense(2)(embedding))
    model.compile("sgd", "mse")
    x, ones = np.zeros((2, 2), "float32"), np.ones(2, "float32")
    for labels, weights, words in (([0.0, 9.0], ones, [rules.class_id_range(C)]),
                                   ([0.0, 2.5], ones, [rules.class_id_range(C),
                                                       rules.WHOLE_NUMBERS, "2.5"]),
                                   ([0.0, 1.0], np.array([1.0, -1.0], "float32"),
                                    [rules.WEIGHTS, "-1"])):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            model.train_on_batch([x, np.array(labels, "float32"), weights], x)
        assert all(word in str(error.value) for word in words), (words, str(error.value))
