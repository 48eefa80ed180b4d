"""`cl.towers` (TF1 towers, no tf.distribute): one graph, a tower per
device, each reading one shared table, and one update from every tower's
batch, against the numpy reference on the concatenated batch.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf

import cl

C, D = 10, 3
# float32 rounding of the update against the float64 reference.
TOLERANCE = 1e-5


class TestTowers:
    """One update from every tower's batch; a tower after update_op is refused."""

    def test_towers_read_and_one_update_follows_the_global_batch(self, session, rng):
        towers = cl.TowerCenterLoss(num_classes=C, alpha=0.5)
        inputs = [(tf.compat.v1.placeholder(tf.int32, [None]),
                   tf.compat.v1.placeholder(tf.float32, [None, D]),
                   tf.compat.v1.placeholder(tf.float32, [None])) for _ in range(3)]
        losses = []
        for i, (y, x, w) in enumerate(inputs):
            with tf.compat.v1.variable_scope(f"tower_{i}"), tf.device("/cpu:0"):
                losses.append(towers(y, x, weights=w if i == 2 else None))
        update = towers.update_op()
        assert towers.update_op() is update
        centers = towers.centers
        assert centers.name == "tower_0/center_loss/centers:0"
        session.run(tf.compat.v1.global_variables_initializer())
        start = rng.normal(size=(C, D)).astype(np.float32)
        session.run(centers.assign(start))
        expected = start.astype(np.float64)
        for step in range(22):
            sizes = [(4, 3, 5), (0, 6, 2), (3, 0, 0)][step % 3]
            y = [rng.integers(3 * i, 3 * i + 4, n) for i, n in enumerate(sizes)]
            x = [rng.normal(size=(n, D)).astype(np.float32) + yi[:, None] for n, yi in zip(sizes, y)]
            w = [np.ones(n, np.float32) for n in sizes]
            w[2] = rng.choice([0.0, 1.0, 3.0], sizes[2]).astype(np.float32)
            if step == 4:
                x[1][0, 1] = np.nan
            feed = {ph: value for tower, data in zip(inputs, zip(y, x, w))
                    for ph, value in zip(tower, data)}
            if step % 7 == 6:
                # Losses alone (evaluation) read without updating.
                before = session.run(centers)
                session.run(losses, feed)
                np.testing.assert_array_equal(session.run(centers), before)
                continue
            got, _ = session.run([losses, update], feed)
            gy, gx, gw = np.concatenate(y), np.concatenate(x), np.concatenate(w)
            np.testing.assert_allclose(np.concatenate(got), reference.center_loss(gy, gx, expected),
                                       rtol=TOLERANCE, atol=TOLERANCE)
            expected = reference.update_centers(gy, gx, expected, 0.5, gw)
            np.testing.assert_allclose(session.run(centers), expected, rtol=TOLERANCE, atol=TOLERANCE)

    def test_tower_after_update_op_is_refused(self, session):
        towers = cl.TowerCenterLoss(num_classes=C)
        towers(tf.constant([1]), tf.ones([1, D]))
        towers.update_op()
        with pytest.raises(RuntimeError, match="after update_op"):
            towers(tf.constant([1]), tf.ones([1, D]))

    def test_each_instance_owns_its_table_unless_given_one(self, session):
        first, second = cl.TowerCenterLoss(num_classes=C), cl.TowerCenterLoss(num_classes=C)
        first(tf.constant([1]), tf.ones([1, D]))
        with pytest.warns(UserWarning):
            second(tf.constant([1]), tf.ones([1, D]))
        assert first.centers is not second.centers
        shared = cl.TowerCenterLoss(num_classes=C, centers=first.centers)
        shared(tf.constant([1]), tf.ones([1, D]))
        assert shared.centers is first.centers
