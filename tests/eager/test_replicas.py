"""`cl.graph.replicas` for cl.tf2: CenterLoss under tf.distribute (issue 16, item 1), with the user's
standard TF2 code: made in strategy.scope(), called in strategy.run inside a
tf.function, data from experimental_distribute_dataset. Against the numpy
reference applied to the GLOBAL batch (every replica's batch concatenated).

Replicas are 2 logical CPU devices, which must be configured before
TensorFlow initialises, so they run in a subprocess; workers are 2 local
processes on 127.0.0.1. The scripts are tests/scripts/tf2_*.py, run as
`python -c` from the folder pytest runs in, so `import cl` finds the
checkout under test. Each reports its worst deviations, asserted here.
"""

import json
import re

import pytest
from helpers import run_python, run_workers, script, script_result_once

pytest.importorskip("tensorflow")

# float32 rounding against the float64 reference (losses reach ~50).
CENTER_TOLERANCE, LOSS_TOLERANCE = 1e-5, 1e-4
REFUSED_STRATEGY = ("does not support CentralStorageStrategy (2 replicas): its replicas' "
                    "centers would drift apart. Use tf.distribute.MirroredStrategy, "
                    "MultiWorkerMirroredStrategy, or cl.tf2.CenterLoss without a strategy.")




@pytest.fixture(scope="session")
def mirrored(tmp_path_factory):
    return script_result_once(tmp_path_factory, "tf2_mirrored_center_loss", timeout=240)


def test_mirrored_copies_bitwise_equal_and_follow_the_global_batch(mirrored):
    report = mirrored["train"]
    assert (report["kind"], report["aggregation"], report["copies"]) == \
        ("MirroredVariable", "ONLY_FIRST_REPLICA", 2)
    # Uneven and empty per-replica batches were exercised.
    assert [4, 3] in report["splits"] and [1, 0] in report["splits"]
    assert report["copies_equal"] and report["moved"]
    assert report["center_dev"] < CENTER_TOLERANCE  # plain and weighted rule
    # Losses and gradients from the pre-update centers, NaN where the sample is.
    assert report["loss_dev"] < LOSS_TOLERANCE
    assert report["grad_dev"] < CENTER_TOLERANCE
    assert report["frozen_when_off"]  # tensor training=False


def test_mirrored_eager_strategy_run_follows_the_rule(mirrored):
    report = mirrored["train"]["eager"]
    assert report["copies_equal"]
    assert report["center_dev"] < CENTER_TOLERANCE and report["loss_dev"] < LOSS_TOLERANCE


@pytest.mark.parametrize("route", ["tf.function", "eager"])
@pytest.mark.parametrize("case, message", [
    ("label", r"labels must be class ids in \[0, num_classes=10\).*12"),
    ("weight", r"sample weights must be finite and >= 0")])
def test_bad_sample_on_one_replica_raises_before_any_copy_changes(mirrored, route, case, message):
    report = mirrored["train"]["bad_inputs"]
    error = report[f"{case} {route}"]
    assert error and error.startswith("InvalidArgumentError") and re.search(message, error, re.S)
    assert report[f"{case} {route} unchanged"]


def test_mirrored_checkpoint_round_trip_restores_every_copy(mirrored):
    assert mirrored["train"]["checkpoint"] == {"changed": True, "restored": True}


def test_what_cannot_be_exact_is_refused_and_one_device_is_exact(mirrored):
    found = mirrored["refusals"]
    assert found["cross_replica"].startswith("RuntimeError: cl.tf2.CenterLoss 'center_loss' "
                                             "was called in the cross-replica context")
    assert found["cross_replica_read_only"] is None
    assert "belongs to a tf.distribute strategy but is used outside it" in found["outside_strategy"]
    assert found["plain_table"].startswith("ValueError")
    assert "is a plain variable shared by 2 replicas" in found["plain_table"]
    assert "(construct the cl.tf2.CenterLoss there)" in found["plain_table"]
    for key in ("central_storage_scope", "central_storage_run"):
        assert found[key] == f"NotImplementedError: cl.tf2.CenterLoss 'center_loss' {REFUSED_STRATEGY}"
    assert found["unchanged"]
    assert found["one_device_dev"] < CENTER_TOLERANCE



def test_multi_worker_mirrored_strategy_two_processes():
    reports = run_workers(script("tf2_multi_worker_center_loss"))
    assert [r["replicas"] for r in reports] == [2, 2]
    # Worker 1 had a short (3) and an empty (0) batch.
    assert reports[0]["splits"] == [4, 4, 1, 3, 4, 4] and reports[1]["splits"] == [4, 3, 0, 3, 4, 3]
    # Both workers' tables are bitwise identical after every step, and moved ...
    assert reports[0]["hashes"] == reports[1]["hashes"]
    assert len(set(reports[0]["hashes"])) == len(reports[0]["hashes"])
    # ... and follow the rule on the global batch, from the pre-update centers.
    for report in reports:
        assert report["center_dev"] < CENTER_TOLERANCE
        assert report["loss_dev"] < LOSS_TOLERANCE and report["local_loss_dev"] < LOSS_TOLERANCE
        assert report["checkpoint_changed"] and report["checkpoint_restored"]


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
    """Issue 14 (cl.tf2): a strategy cl cannot make exact, and a plain table
    shared by replicas, are refused before any change."""
    # MirroredStrategy and MultiWorkerMirroredStrategy work: above.
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
