"""`cl.graph.checks`: the label, feature and weight rules as TensorFlow
checks (through `cl.center_loss`): what is known when the graph is built
raises then; the rest are run-time asserts that the table's reads and
writes wait for, so a refused batch changes no center.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from graph_batches import C, D, placeholders

import cl


class TestBadLabels:
    """Labels out of range or of another batch size: refused, centers untouched."""

    def run_and_expect_error(self, session, loss, feed, pattern):
        session.run(tf.compat.v1.global_variables_initializer())
        centers = cl.get_centers()
        start = np.arange(C * D, dtype=np.float32).reshape(C, D)
        session.run(centers.assign(start))
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            session.run(loss, feed)
        assert re.search(pattern, error.value.message, re.S), error.value.message
        assert np.array_equal(session.run(centers), start)

    def test_label_too_large(self, session, variable_kind):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        y = np.array([0, 1, 12, 2])
        self.run_and_expect_error(
            session, loss, {labels: y, features: np.ones((4, D), np.float32)},
            r"\[0, num_classes=9\).*\[12\].*at batch position.*\[2\]")

    def test_negative_label(self, session):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        self.run_and_expect_error(
            session, loss, {labels: [3, -1], features: np.ones((2, D), np.float32)},
            r"num_classes=9.*\[-1\].*\[1\]")

    def test_label_count_differs_from_batch(self, session):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        self.run_and_expect_error(
            session, loss, {labels: [1, 2, 3], features: np.ones((2, D), np.float32)},
            r"same batch size; received labels of batch size\W*3\W*and features of batch size\W*2")

    def test_static_shape_and_dtype_errors(self, session):
        features = tf.zeros([4, D])
        with pytest.raises(ValueError, match=r"same batch size.*\(3,\).*\(4, 4\)"):
            cl.center_loss(tf.zeros([3], tf.int32), features, alpha=0.5, num_classes=C)
        with pytest.raises(ValueError, match=r"shape \[batch\] \(class ids\); received shape \(4, 9\)"):
            cl.center_loss(tf.zeros([4, C], tf.int32), features, alpha=0.5, num_classes=C)
        with pytest.raises(TypeError, match="int32 or int64.* received float32"):
            cl.center_loss(tf.zeros([4]), features, alpha=0.5, num_classes=C)
        with pytest.raises(TypeError, match="features must be float.*received int32"):
            cl.center_loss(tf.zeros([4], tf.int32), tf.zeros([4, D], tf.int32),
                           alpha=0.5, num_classes=C)
        assert tf.compat.v1.global_variables() == []


class TestFeatures:
    """Features must be `[batch, dim]` with a known dim."""

    @pytest.mark.parametrize("shape", [[2], [2, 3, D]])
    def test_features_rank(self, session, shape):
        with pytest.raises(ValueError, match=r"\[batch, dim\]; received shape.*rank"):
            cl.center_loss(tf.zeros([2], tf.int32), tf.zeros(shape), alpha=0.5, num_classes=C)

    def test_unknown_feature_dim(self, session):
        features = tf.compat.v1.placeholder(tf.float32, [None, None])
        with pytest.raises(ValueError, match="feature dimension must be known"):
            cl.center_loss(tf.zeros([2], tf.int32), features, alpha=0.5, num_classes=C)


@pytest.mark.usefixtures("blog_classes")
class TestSampleWeight:
    """No silent route (issue 8, case 05): a negative sample weight is refused."""

    def test_negative_weight_is_refused(self, session):
        loss = cl.center_loss([0, 1], tf.ones([2, 3]), alpha=0.5, num_classes=2,
                              sample_weight=[1.0, -1.0])
        session.run(tf.compat.v1.global_variables_initializer())
        with pytest.raises(tf.errors.InvalidArgumentError, match="finite and >= 0.*-1"):
            session.run(loss)
        assert not np.any(session.run(cl.get_centers()))
