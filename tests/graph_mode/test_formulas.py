"""`cl.formulas` directly: the setting checks, and the paper's loss and
update as TensorFlow graph ops, against tests/support/reference.py (cases in
tests/support/formula_cases.py). tests/eager/test_formulas.py runs the same
cases eagerly, on JAX and on PyTorch.
"""

import formula_cases as cases
import numpy as np
import pytest
import tensorflow as tf

from cl import formulas

ALPHA_MESSAGE = r"alpha \(the center learning rate\) must be a number in \[0, 1\]"


class TestCheckAlpha:
    @pytest.mark.parametrize("alpha", [0, 0.0, 0.5, 1, 1.0])
    def test_numbers_in_0_1_are_returned_as_float(self, alpha):
        value = formulas.check_alpha(alpha)
        assert type(value) is float and value == alpha

    @pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf"), True, False, "0.5", None])
    def test_anything_else_is_refused(self, alpha):
        with pytest.raises(ValueError, match=ALPHA_MESSAGE):
            formulas.check_alpha(alpha)


class TestCheckNumClasses:
    @pytest.mark.parametrize("value", [1, 2, 10000])
    def test_ints_from_1_are_returned(self, value):
        assert formulas.check_num_classes(value) == value

    @pytest.mark.parametrize("value", [0, -3, True, 2.0, "3", None])
    def test_anything_else_is_refused(self, value):
        with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
            formulas.check_num_classes(value)

    def test_what_names_the_setting(self):
        with pytest.raises(ValueError, match="dim must be an int >= 1; received 0"):
            formulas.check_num_classes(0, what="dim")


@pytest.mark.parametrize("name", sorted(cases.CASES))
class TestOnTensorFlowGraphs:
    def test_per_sample_center_loss(self, session, name):
        labels, features, _ = cases.CASES[name]
        table = cases.centers()
        loss = formulas.per_sample_center_loss(tf.constant(features), tf.constant(table[labels]))
        cases.check_loss(session.run(loss), labels, features, table)

    @pytest.mark.parametrize("alpha", [cases.ALPHA, 1.0])
    def test_center_update(self, session, name, alpha):
        labels, features, weights = cases.CASES[name]
        table = cases.centers()
        update = formulas.center_update(
            tf.constant(labels), tf.constant(features), tf.constant(table[labels]), alpha,
            None if weights is None else tf.constant(weights))
        class_ids, deltas = session.run(update)
        cases.check_update(class_ids, deltas, labels, features, table, alpha, weights, padded=False)


def test_alpha_0_moves_nothing(session):
    labels, features, weights = cases.CASES["fractional_weights"]
    table = cases.centers()
    _, deltas = session.run(formulas.center_update(
        tf.constant(labels), tf.constant(features), tf.constant(table[labels]), 0.0, tf.constant(weights)))
    assert np.all(deltas == 0.0)


def test_float64_stays_float64(session):
    labels, features, _ = cases.CASES["duplicates"]
    features = features.astype(np.float64)
    table = cases.centers().astype(np.float64)
    loss = formulas.per_sample_center_loss(tf.constant(features), tf.constant(table[labels]))
    class_ids, deltas = formulas.center_update(tf.constant(labels), tf.constant(features),
                                               tf.constant(table[labels]), 0.5)
    assert loss.dtype == tf.float64 and deltas.dtype == tf.float64
    cases.check_update(*session.run([class_ids, deltas]), labels, features, table, 0.5, None, padded=False)


def test_empty_batch_updates_nothing(session):
    labels = tf.compat.v1.placeholder(tf.int32, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, cases.D])
    class_ids, deltas = session.run(
        formulas.center_update(labels, features, features, 0.5),
        {labels: np.zeros(0, np.int32), features: np.zeros((0, cases.D), np.float32)})
    assert class_ids.shape == (0,) and deltas.shape == (0, cases.D)


def test_unknown_batch_size_in_the_graph(session):
    """The graph is built once for any batch size (placeholders of [None])."""
    labels = tf.compat.v1.placeholder(tf.int32, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, cases.D])
    weights = tf.compat.v1.placeholder(tf.float32, [None])
    centers = tf.compat.v1.placeholder(tf.float32, [None, cases.D])
    update = formulas.center_update(labels, features, centers, cases.ALPHA, weights)
    table = cases.centers()
    for name in ("duplicates", "class_all_weights_zero", "nan_and_weight_zero"):
        y, x, w = cases.CASES[name]
        w = np.ones(len(y), np.float32) if w is None else w
        class_ids, deltas = session.run(update, {labels: y, features: x, weights: w, centers: table[y]})
        cases.check_update(class_ids, deltas, y, x, table, cases.ALPHA, w, padded=False)
