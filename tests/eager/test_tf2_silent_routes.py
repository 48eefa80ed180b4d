"""cl.tf2.CenterLoss on the routes that used to be silent or unclear
(issue 14): float and small-int labels, bad sample weights, XLA, batch
sizes that differ, tf.distribute strategies.

Refusals are checked for what they say and that no center changed; what
runs is checked against the numpy reference.
"""

import json

import numpy as np
import pytest
import reference
from helpers import run_python

tf = pytest.importorskip("tensorflow")
from cl.tf2 import CenterLoss  # noqa: E402

C, D, B, ALPHA = 5, 3, 8, 0.5


def preset(rng):
    """A table with distinct rows, so a sample read from the wrong row shows."""
    center = CenterLoss(C, D, alpha=ALPHA)
    center.centers.assign(rng.normal(size=(C, D)).astype("float32"))
    return center, center.centers.numpy().copy()


def batch(rng):
    x = rng.normal(size=(B, D)).astype("float32")
    y = rng.integers(0, C, B).astype("int32")
    y[:3] = y[0]  # duplicates
    return x, y


def unknown_batch_step(center):
    spec = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, D], tf.float32),
            tf.TensorSpec([None], tf.float32)]
    return tf.function(lambda y, x, w: center(y, x, sample_weight=w), input_signature=spec)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_labels_are_refused_naming_the_dtype(rng, dtype):
    center, before = preset(rng)
    x, y = batch(rng)
    labels = y.astype(dtype)
    labels[1], labels[2] = 2.5, np.nan
    with pytest.raises(TypeError, match=rf"integer class ids.*received {dtype}\. .*tf\.cast"):
        center(labels, x)
    with pytest.raises(TypeError, match=rf"received {dtype}"):
        tf.function(center)(labels, x)
    assert np.array_equal(center.centers.numpy(), before)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "uint32", "int64"])
def test_any_integer_label_dtype_follows_the_reference(rng, dtype):
    center, before = preset(rng)
    x, y = batch(rng)
    losses = center(y.astype(dtype), x)
    np.testing.assert_allclose(losses, reference.center_loss(y, x, before), rtol=1e-5)
    np.testing.assert_allclose(center.centers.numpy(),
                               reference.update_centers(y, x, before, ALPHA), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("route", ["eager", "tf.function"])
def test_negative_nan_and_inf_weights_are_refused_before_any_change(rng, route):
    center, before = preset(rng)
    x, y = batch(rng)
    w = np.ones(B, "float32")
    w[2], w[5], w[6] = -1.0, np.nan, np.inf
    call = center if route == "eager" else tf.function(center)
    # Eager and graph asserts print values differently: "-1.0, nan" / "[-1 nan".
    message = (r"sample weights must be finite and >= 0.*received:\W*-1(\.0)?,? nan,? inf"
               r"\W*b?'?at batch position\(s\):\W*2,? 5,? 6")
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(y, x, sample_weight=w)
    assert np.array_equal(center.centers.numpy(), before)


def test_weight_shapes_other_than_one_per_sample_are_refused(rng):
    center, before = preset(rng)
    x, y = batch(rng)
    for shape in [(B, 2), (B - 1,), (1,), ()]:
        with pytest.raises(ValueError, match=rf"sample_weight must have shape \[batch\].*"
                                             rf"labels have shape \({B},\); received shape"):
            center(y, x, sample_weight=np.ones(shape, "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"one weight per sample; received\W*{B - 1}\W*weights for a "
                             rf"batch of\W*{B}"):
        unknown_batch_step(center)(y, x, np.ones(B - 1, "float32"))
    assert np.array_equal(center.centers.numpy(), before)
    # [batch, 1] is one weight per sample too.
    w = rng.uniform(0.5, 2.0, B).astype("float32")
    center(y, x, sample_weight=w[:, None])
    np.testing.assert_allclose(center.centers.numpy(),
                               reference.update_centers(y, x, before, ALPHA, w),
                               rtol=1e-5, atol=1e-6)


def test_batch_sizes_that_differ_are_named_before_any_change(rng):
    center, before = preset(rng)
    x, y = batch(rng)
    with pytest.raises(ValueError, match=r"same batch size; received labels of shape "
                                         r"\(8,\) and features of shape \(5, 3\)"):
        center(y, x[:5])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"same batch size; received labels of batch size\W*8\W*"
                             r"and features of batch size\W*5"):
        unknown_batch_step(center)(y, x[:5], np.ones(B, "float32"))
    assert np.array_equal(center.centers.numpy(), before)


def xla_step(center):
    @tf.function(jit_compile=True)
    def step(labels, features, weights):
        with tf.GradientTape() as tape:
            tape.watch(features)
            losses = center(labels, features, sample_weight=weights)
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, features)
    return step


@pytest.mark.skipif(
    tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16),
    reason="TF 2.15's XLA cannot compile the update at all (cl.formulas.center_update: "
           "'Fail to proof the equality of two dimensions', any labels)")
def test_xla_bad_labels_and_weights_read_nan_and_are_left_out(rng):
    # XLA drops the asserts; a gather out of range would read a clamped row
    # (label 9 -> row 4, -1 -> row 0) and give a finite, wrong loss.
    center, before = preset(rng)
    step = xla_step(center)
    expected = before
    for _ in range(3):
        x, y = batch(rng)
        w = rng.uniform(0.5, 2.0, B).astype("float32")
        y[3], y[4] = 9, -1
        w[6], w[7] = -1.0, np.nan
        losses, grad = step(tf.constant(y), tf.constant(x), tf.constant(w))
        bad = np.zeros(B, bool)
        bad[[3, 4, 6, 7]] = True
        good = ~bad
        assert np.all(np.isnan(losses.numpy()[bad]))
        np.testing.assert_allclose(losses.numpy()[good],
                                   reference.center_loss(y[good], x[good], expected), rtol=1e-5)
        # No gradient reaches the NaN: the others' gradients are x - c_y, the bad ones' 0.
        np.testing.assert_allclose(grad.numpy()[good], x[good] - expected[y[good]],
                                   rtol=1e-5, atol=1e-6)
        assert np.all(grad.numpy()[bad] == 0)
        expected = reference.update_centers(y[good], x[good], expected, ALPHA, w[good])
        np.testing.assert_allclose(center.centers.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(center.centers.numpy()))


STRATEGY = r"""
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cl.tf2 import CenterLoss

labels = tf.constant([0, 1, 1, 2], tf.int32)
features = tf.constant(np.arange(12, dtype="float32").reshape(4, 3))
report = {}

def attempt(key, fn):
    try:
        fn()
        report[key] = "ran"
    except Exception as error:
        report[key] = f"{type(error).__name__}: {error}"

# CentralStorageStrategy keeps one table but runs the replicas' updates separately.
strategy = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
def construct():
    with strategy.scope():
        CenterLoss(3, 3)
attempt("scope", construct)
center = CenterLoss(3, 3)
center.centers.assign(np.ones((3, 3), "float32"))
attempt("run", lambda: strategy.run(center, args=(labels, features)))
attempt("run in tf.function", lambda: tf.function(
    lambda: strategy.run(center, args=(labels, features)))())
# Made outside MirroredStrategy's scope: a plain variable its 2 replicas would share.
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
attempt("plain table", lambda: tf.function(
    lambda: mirrored.run(center, args=(labels, features)))())
report["centers unchanged"] = bool(np.all(center.centers.numpy() == 1))
print("REPORT", json.dumps(report))
"""


def test_unsupported_strategies_and_plain_tables_are_refused_before_any_change():
    # MirroredStrategy and MultiWorkerMirroredStrategy work: test_tf2_distribute.py.
    result = run_python(STRATEGY)
    line = [row for row in result.stdout.splitlines() if row.startswith("REPORT ")]
    assert line, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(line[0][len("REPORT "):])
    for key in ("scope", "run", "run in tf.function"):
        assert report[key].startswith("NotImplementedError: "), (key, report[key])
        assert "does not support CentralStorageStrategy (2 replicas)" in report[key], report[key]
        assert "Use tf.distribute.MirroredStrategy, MultiWorkerMirroredStrategy" in report[key]
    assert report["plain table"].startswith("ValueError"), report["plain table"]
    assert "plain variable shared by 2 replicas" in report["plain table"]
    assert report["centers unchanged"]
