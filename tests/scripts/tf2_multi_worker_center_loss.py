"""cl.tf2.CenterLoss under tf.distribute.MultiWorkerMirroredStrategy, one
worker of 2 (one replica each), with the user's standard TF2 code: the
module made in strategy.scope(), called in strategy.run inside a
tf.function, data from experimental_distribute_dataset (uneven and empty
per-worker batches). After every step both workers' tables are bitwise
equal and follow the rule on the global batch; each worker's loss uses the
pre-update centers. A tf.train.Checkpoint round trip (each worker saves
to its own folder, as TF2 asks) restores the table.

Run by tests/eager/test_replicas.py as 2 processes on 127.0.0.1; argv:
task index, comma-separated ports, the tests/support folder. Prints one RESULT line.
"""

import hashlib
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, sys.argv[3])  # tests/support: the numpy reference, the script helpers
from multi_worker import join_cluster  # noqa: E402

join_cluster(sys.argv)  # TF_CONFIG: before TensorFlow starts

import reference  # noqa: E402
import tensorflow as tf  # noqa: E402

from cl.tf2 import CenterLoss  # noqa: E402

C, D, ALPHA = 10, 3, 0.5
# Global batches: split 4/4, 4/3 (uneven), 1/0 (one worker empty), 3/3.
SIZES = [8, 7, 1, 6, 8, 7]


def dataset():
    """The same global batches on both workers (each takes its share)."""
    rng = np.random.default_rng(1)
    data = None
    for step, size in enumerate(SIZES):
        y = rng.integers(0, 8, size).astype(np.int32)
        x = (rng.normal(size=(size, D)) + y[:, None]).astype(np.float32)
        w = rng.choice([0.0, 0.5, 1.0, 2.0], size).astype(np.float32)
        if step == 3:
            x[2, 0] = np.nan
        part = tf.data.Dataset.from_tensors((y, x, w))
        data = part if data is None else data.concatenate(part)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def main():
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    with strategy.scope():
        plain = CenterLoss(C, D, alpha=ALPHA, name="plain")
        weighted = CenterLoss(C, D, alpha=ALPHA, name="weighted")
        start = np.random.default_rng(0).normal(size=(C, D)).astype(np.float32)
        for center in (plain, weighted):
            center.centers.assign(start)

    @tf.function
    def step(batch):
        def replica_fn(y, x, w):
            return plain(y, x), weighted(y, x, sample_weight=w), y, x, w
        local = strategy.run(replica_fn, args=batch)
        # The global batch and losses, in replica order, for the reference.
        return local, [strategy.gather(value, axis=0) for value in local]

    def table(center):
        return strategy.experimental_local_results(center.centers)[0].numpy()

    report = dict(replicas=strategy.num_replicas_in_sync, hashes=[], splits=[],
                  center_dev=0.0, loss_dev=0.0, local_loss_dev=0.0)
    expected = [start.astype(np.float64)] * 2
    for batch in strategy.experimental_distribute_dataset(dataset()):
        local, (losses, weighted_losses, gy, gx, gw) = step(batch)
        local = [strategy.experimental_local_results(value)[0].numpy() for value in local]
        report["splits"].append(len(local[2]))
        gy, gx, gw = gy.numpy(), gx.numpy(), gw.numpy()
        for t, got in enumerate((losses.numpy(), weighted_losses.numpy())):
            want = reference.center_loss(gy, gx, expected[t])
            assert np.array_equal(np.isnan(got), np.isnan(want))
            report["loss_dev"] = max(report["loss_dev"],
                                     float(np.nanmax(np.abs(got - want), initial=0.0)))
            # This worker's own losses: its samples, the pre-update centers.
            mine = reference.center_loss(local[2], local[3], expected[t])
            report["local_loss_dev"] = max(report["local_loss_dev"], float(
                np.nanmax(np.abs(local[t] - mine), initial=0.0)))
        expected = [reference.update_centers(gy, gx, expected[0], ALPHA),
                    reference.update_centers(gy, gx, expected[1], ALPHA, gw)]
        tables = [table(plain), table(weighted)]
        report["hashes"].append(hashlib.sha256(b"".join(t.tobytes() for t in tables)).hexdigest())
        report["center_dev"] = max([report["center_dev"]] + [
            float(np.abs(t - e).max()) for t, e in zip(tables, expected)])
    saved = table(weighted)
    ckpt = tf.train.Checkpoint(center=weighted)
    path = ckpt.save(os.path.join(tempfile.mkdtemp(), "ckpt"))
    with strategy.scope():
        weighted.centers.assign(np.full((C, D), 7.0, np.float32))
    report["checkpoint_changed"] = bool(np.all(table(weighted) == 7.0))
    ckpt.restore(path).assert_consumed()
    report["checkpoint_restored"] = bool(np.array_equal(table(weighted), saved))
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
