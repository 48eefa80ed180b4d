"""`cl.settings` in graph mode: the blog's package constants
(`cl.NUM_CLASSES`, `cl.ALPHA`) are read when a loss is built.
"""

import numpy as np
import tensorflow as tf

import cl


class TestPackageSettings:
    """`cl.NUM_CLASSES = ...` (the blog's style) reaches the next loss."""

    def test_package_constants_are_read_at_call_time(self, session, monkeypatch):
        monkeypatch.setattr(cl, "NUM_CLASSES", 5)
        monkeypatch.setattr(cl, "ALPHA", 1.0)
        loss = cl.center_loss(tf.constant([2]), tf.constant([[2.0, 4.0]]))
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(loss)
        centers = session.run(cl.get_centers())
        assert centers.shape == (5, 2)
        np.testing.assert_array_equal(centers[2], [1.0, 2.0])  # alpha 1, n 1: x / 2
