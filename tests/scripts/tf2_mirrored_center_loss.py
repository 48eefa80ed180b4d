"""cl.tf2.CenterLoss under tf.distribute.MirroredStrategy (2 logical CPUs),
with the user's standard TF2 code: the module made in strategy.scope(),
called in strategy.run inside a tf.function, data from
experimental_distribute_dataset (uneven and empty per-replica batches). After
every step both copies are bitwise equal and follow the rule on the global
batch; the losses and gradients use the pre-update centers; training=False
freezes the table; bad samples raise before any copy changes; a checkpoint
round trip restores every copy; what cannot be exact is refused.

Run by tests/eager/test_replicas.py in a subprocess (logical devices must
be set before TensorFlow initialises); argv: the tests/support folder. Prints one
RESULT line.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference
import reference  # noqa: E402

from cl.tf2 import CenterLoss  # noqa: E402

C, D, ALPHA = 10, 3, 0.5
# Global batches: split 4/4, 4/3 (uneven), 1/0 (one replica empty), 3/3.
SIZES = [8, 7, 1, 6, 8, 7]


def dataset(rng):
    """Global batches of `SIZES`, with duplicates, a NaN sample, weight-0
    samples and classes 8-9 never present."""
    parts = []
    for step, size in enumerate(SIZES):
        y = rng.integers(0, 8, size).astype(np.int32)
        x = (rng.normal(size=(size, D)) + y[:, None]).astype(np.float32)
        w = rng.choice([0.0, 0.5, 1.0, 2.0], size).astype(np.float32)
        if step == 3:
            x[2, 0] = np.nan
        parts.append(tf.data.Dataset.from_tensors((y, x, w)))
    data = parts[0]
    for part in parts[1:]:
        data = data.concatenate(part)
    return data


def copies(center):
    return [v.numpy() for v in center.centers.values]


def local(strategy, value):
    return np.concatenate([t.numpy() for t in strategy.experimental_local_results(value)])


def train(strategy):
    with strategy.scope():
        plain = CenterLoss(C, D, alpha=ALPHA, name="plain")
        weighted = CenterLoss(C, D, alpha=ALPHA, name="weighted")
    start = np.random.default_rng(0).normal(size=(C, D)).astype(np.float32)
    for center in (plain, weighted):
        center.centers.assign(start)  # cross-replica assign: every copy

    @tf.function
    def step(batch, training):
        def replica_fn(y, x, w):
            with tf.GradientTape() as tape:
                tape.watch(x)
                losses = plain(y, x, training=training)
                total = tf.reduce_sum(tf.where(tf.math.is_nan(losses), 0.0, losses))
            weighted_losses = weighted(y, x, sample_weight=w)
            return losses, weighted_losses, tape.gradient(total, x), y, x, w
        return strategy.run(replica_fn, args=batch)

    report = dict(kind=type(plain.centers).__name__,
                  aggregation=plain.centers.aggregation.name, copies=len(plain.centers.values),
                  splits=[], copies_equal=True, center_dev=0.0, loss_dev=0.0, grad_dev=0.0,
                  frozen_when_off=True, moved=True)
    expected = [start.astype(np.float64)] * 2
    data = strategy.experimental_distribute_dataset(dataset(np.random.default_rng(1)))
    for index, batch in enumerate(data):
        on = index % 3 != 2
        before = copies(plain)
        losses, weighted_losses, grads, y, x, w = step(batch, tf.constant(on))
        report["splits"].append([int(t.shape[0]) for t in strategy.experimental_local_results(y)])
        gy, gx, gw = local(strategy, y), local(strategy, x), local(strategy, w)
        for t, got in enumerate((losses, weighted_losses)):
            got, want = local(strategy, got), reference.center_loss(gy, gx, expected[t])
            assert np.array_equal(np.isnan(got), np.isnan(want))
            report["loss_dev"] = max(report["loss_dev"],
                                     float(np.nanmax(np.abs(got - want), initial=0.0)))
        want_grad = np.where(np.isfinite(gx).all(1, keepdims=True), gx - expected[0][gy], 0.0)
        report["grad_dev"] = max(report["grad_dev"], float(np.abs(
            np.nan_to_num(local(strategy, grads)) - np.nan_to_num(want_grad)).max()))
        if on:
            expected[0] = reference.update_centers(gy, gx, expected[0], ALPHA)
        expected[1] = reference.update_centers(gy, gx, expected[1], ALPHA, gw)
        for t, center in enumerate((plain, weighted)):
            now = copies(center)
            report["copies_equal"] &= all(np.array_equal(now[0], c) for c in now[1:])
            report["center_dev"] = max(report["center_dev"], float(np.abs(now[0] - expected[t]).max()))
        if not on:
            report["frozen_when_off"] &= all(np.array_equal(a, b) for a, b in zip(before, copies(plain)))
        elif len(gy):
            report["moved"] &= not np.array_equal(before[0], copies(plain)[0])
    report["eager"] = eager_step(strategy, plain)
    report["bad_inputs"] = bad_inputs(strategy, weighted)
    report["checkpoint"] = checkpoint(strategy, weighted)
    return report


def eager_step(strategy, center):
    """strategy.run without a tf.function: the same rule."""
    rng = np.random.default_rng(2)
    y, x = rng.integers(0, C, 5).astype(np.int32), rng.normal(size=(5, D)).astype(np.float32)
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((y, x)))))
    before = copies(center)[0].astype(np.float64)
    losses = strategy.run(center, args=batch)
    gy, gx = local(strategy, batch[0]), local(strategy, batch[1])
    now = copies(center)
    return dict(copies_equal=all(np.array_equal(now[0], c) for c in now[1:]),
                loss_dev=float(np.abs(local(strategy, losses) - reference.center_loss(gy, gx, before)).max()),
                center_dev=float(np.abs(now[0] - reference.update_centers(gy, gx, before, ALPHA)).max()))


def bad_inputs(strategy, center):
    """A bad sample on one replica: an error, and no copy changes."""
    y = np.array([0, 1, 2, 3, 4, 12], np.int32)  # 12 is on replica 1
    x = np.ones((6, D), np.float32)
    w = np.ones(6, np.float32)
    negative = w.copy()
    negative[1] = -1.0  # on replica 0
    found = {}
    for case, (labels, weights) in {"label": (y, w), "weight": (y % C, negative)}.items():
        batch = next(iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors((labels, x, weights)))))
        before = copies(center)

        def run(batch=batch):
            return strategy.run(center, args=batch[:2], kwargs={"sample_weight": batch[2]})
        for route, call in (("tf.function", tf.function(run)), ("eager", run)):
            found[f"{case} {route}"] = error_of(call)
            found[f"{case} {route} unchanged"] = all(
                np.array_equal(a, b) for a, b in zip(before, copies(center)))
    return found


def checkpoint(strategy, center):
    saved = copies(center)[0]
    folder = tempfile.mkdtemp()
    with strategy.scope():
        ckpt = tf.train.Checkpoint(center=center)
        path = ckpt.save(os.path.join(folder, "ckpt"))
        center.centers.assign(np.full((C, D), 7.0, np.float32))
        changed = all(np.all(c == 7.0) for c in copies(center))
        ckpt.restore(path).assert_consumed()
    return dict(changed=changed, restored=all(np.array_equal(c, saved) for c in copies(center)))


def error_of(build):
    try:
        build()
    except Exception as error:  # reported, not raised: the test shows it
        return f"{type(error).__name__}: {error}"
    return None


def refusals(strategy):
    y, x = np.array([1, 2], np.int32), np.ones((2, D), np.float32)
    found = {}
    with strategy.scope():
        mirrored = CenterLoss(C, D)
        found["cross_replica"] = error_of(lambda: mirrored(y, x))
        found["cross_replica_read_only"] = error_of(lambda: mirrored(y, x, training=False))
    found["outside_strategy"] = error_of(lambda: mirrored(y, x))
    plain = CenterLoss(C, D)
    found["plain_table"] = error_of(lambda: tf.function(lambda: strategy.run(plain, args=(y, x)))())
    central = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
    with central.scope():
        found["central_storage_scope"] = error_of(lambda: CenterLoss(C, D))
    found["central_storage_run"] = error_of(lambda: central.run(plain, args=(y, x)))
    found["unchanged"] = bool(np.all(plain.centers.numpy() == 0)) and all(
        np.all(c == 0) for c in copies(mirrored))
    # One replica: a plain variable, the one-device path, exact.
    one = tf.distribute.OneDeviceStrategy("/cpu:1")
    with one.scope():
        single = CenterLoss(C, D)
    single.centers.assign(np.ones((C, D), np.float32))
    tf.function(lambda: one.run(single, args=(y, x)))()
    want = reference.update_centers(y, x, np.ones((C, D)), 0.5)
    found["one_device_dev"] = float(np.abs(single.centers.numpy() - want).max())
    return found


if __name__ == "__main__":
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print("RESULT " + json.dumps({"train": train(mirrored_strategy),
                                  "refusals": refusals(mirrored_strategy)}), flush=True)
