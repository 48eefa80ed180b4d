"""cl.tf2.CenterLoss in eager code and in a tf.function train step."""

import numpy as np
import pytest
import reference

tf = pytest.importorskip("tensorflow")
from cl.tf2 import CenterLoss  # noqa: E402

C, D, B, ALPHA = 7, 3, 16, 0.5


def batches(rng, steps):
    for _ in range(steps):
        x = rng.normal(size=(B, D)).astype("float32") + 3.0
        y = rng.integers(0, 5, B).astype("int32")  # classes 5, 6 absent
        y[:4] = y[0]
        yield x, y


def test_tf_function_step_traces_once_and_follows_the_reference(rng):
    center = CenterLoss(C, D, alpha=ALPHA)
    traces = []

    @tf.function
    def step(labels, features):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(features)
            losses = center(labels, features)
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, [features, center.centers])

    expected = np.zeros((C, D), np.float32)
    for x, y in batches(rng, 6):
        losses, (grad_features, grad_centers) = step(tf.constant(y), tf.constant(x))
        np.testing.assert_allclose(losses, reference.center_loss(y, x, expected), rtol=1e-5)
        np.testing.assert_allclose(grad_features, x - expected[y], rtol=1e-5, atol=1e-6)
        assert grad_centers is None  # the centers get no gradient
        expected = reference.update_centers(y, x, expected, ALPHA)
        np.testing.assert_allclose(center.centers.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert len(traces) == 1
    assert np.all(center.centers.numpy()[5:] == 0)
    assert center.centers.name == "center_loss/centers:0" and not center.centers.trainable
    assert center.trainable_variables == ()


def test_nan_samples_and_weight_zero_never_move_a_center(rng):
    center = CenterLoss(C, D, alpha=ALPHA)
    expected = np.zeros((C, D), np.float32)
    for x, y in batches(rng, 3):
        x[1, 0] = np.nan
        w = rng.uniform(0.5, 2.0, B).astype("float32")
        w[y == y[6]] = 0.0
        losses = center(y, x, sample_weight=w)
        assert np.isnan(losses[1])
        expected = reference.update_centers(y, x, expected, ALPHA, w)
        np.testing.assert_allclose(center.centers.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(center.centers.numpy()))


@pytest.mark.parametrize("training", [False, "tensor"])
def test_training_false_never_updates(rng, training):
    center = CenterLoss(C, D)
    x, y = next(batches(rng, 1))
    center(y, x)
    before = center.centers.numpy().copy()
    flag = tf.constant(False) if training == "tensor" else False
    tf.function(lambda labels, features: center(labels, features, training=flag))(y, x)
    center(y, x, training=flag)
    assert np.array_equal(center.centers.numpy(), before)
    center(y, x, training=tf.constant(True))
    np.testing.assert_allclose(center.centers.numpy(),
                               reference.update_centers(y, x, before, 0.5), rtol=1e-5, atol=1e-6)


def test_out_of_range_labels_change_no_center(rng):
    center = CenterLoss(C, D)
    x, y = next(batches(rng, 1))
    center(y, x)
    before = center.centers.numpy().copy()
    y[5] = C
    message = r"(?s)num_classes=7\).*label\(s\):.\n7\n.*position\(s\):.\n5"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        center(y, x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=7"):
        tf.function(center)(y, x)
    assert np.array_equal(center.centers.numpy(), before)
    with pytest.raises(ValueError, match="dim=3"):
        center(y, x[:, :2])


def test_checkpoint_round_trip_and_shape_mismatch(rng, tmp_path):
    center = CenterLoss(C, D)
    for x, y in batches(rng, 2):
        center(y, x)
    path = tf.train.Checkpoint(center=center).save(str(tmp_path / "ckpt"))
    restored = CenterLoss(C, D)
    tf.train.Checkpoint(center=restored).restore(path).assert_consumed()
    assert np.array_equal(restored.centers.numpy(), center.centers.numpy())
    other = CenterLoss(C + 1, D)
    with pytest.raises(ValueError):
        tf.train.Checkpoint(center=other).restore(path)
    with pytest.raises(ValueError):
        other.centers.assign(center.centers)


def test_load_refuses_another_shape_or_non_finite_values_before_any_change(rng):
    center = CenterLoss(C, D)
    start = rng.normal(size=(C, D)).astype(np.float32)
    center.load(start)
    np.testing.assert_array_equal(center.centers.numpy(), start)
    for bad in (np.zeros((C + 1, D), np.float32), np.zeros((C, D + 1), np.float32)):
        with pytest.raises(ValueError, match=rf"\[{C}, {D}\]; received \[{bad.shape[0]}, {bad.shape[1]}\]"):
            center.load(bad)
    nan = start.copy()
    nan[1, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="not all finite"):
        center.load(nan)
    np.testing.assert_array_equal(center.centers.numpy(), start)


def test_load_guards_a_sharded_table_whose_assign_would_slice():
    """What ParameterServerStrategy makes: its assign takes a wrong shape."""
    from tensorflow.python.distribute.sharded_variable import ShardedVariable
    center = CenterLoss(4, 2)
    center.centers = ShardedVariable([tf.Variable(tf.zeros([2, 2])), tf.Variable(tf.zeros([2, 2]))])
    center.centers.assign(tf.ones([5, 2]))  # TF itself: accepted, sliced
    with pytest.raises(ValueError, match=r"\[4, 2\]; received \[5, 2\]"):
        center.load(np.ones([5, 2], np.float32))
    center.load(np.full([4, 2], 3.0, np.float32))
    np.testing.assert_array_equal(
        np.concatenate([v.numpy() for v in center.centers.variables]), np.full([4, 2], 3.0))
