"""`cl.graph.replicas`: the graph API and Keras 2 under tf.distribute
(MirroredStrategy, both classes, and MultiWorkerMirroredStrategy), against
the numpy reference applied to the GLOBAL batch (every replica's batch
concatenated). TF1 towers: test_towers.py.

Replicas are 2 logical CPU devices, which must be configured before
TensorFlow initialises, so those scenarios run in a subprocess that prints
JSON; workers are 2 local processes on 127.0.0.1. Each subprocess checks
many steps and reports its worst deviations, which the tests assert. The
subprocesses run the scripts in tests/scripts/ (as `python -c`, from the
folder pytest runs in, so `import cl` finds the checkout under test).
"""

import re

import pytest
from helpers import SUPPORT, result_of, run_python, run_workers, script, script_result_once

# float32 rounding of the update against the float64 reference.
TOLERANCE = 1e-5


@pytest.fixture(scope="session")
def mirrored(tmp_path_factory):
    return script_result_once(tmp_path_factory, "mirrored_center_loss")


@pytest.mark.parametrize("kind", ["v2", "v1"])
class TestMirroredStrategy:
    """tf.distribute.MirroredStrategy and tf.compat.v1.distribute.MirroredStrategy."""

    def test_copies_bitwise_equal_and_follow_the_global_batch(self, mirrored, kind):
        report = mirrored[kind]
        assert report["copies_equal"]
        assert report["center_dev"] < TOLERANCE
        assert report["untouched_rows_equal"]
        assert report["aggregation"] == "ONLY_FIRST_REPLICA"

    def test_losses_use_the_pre_update_centers(self, mirrored, kind):
        assert mirrored[kind]["loss_dev"] < TOLERANCE

    def test_training_off_changes_nothing(self, mirrored, kind):
        assert mirrored[kind]["frozen_when_off"]

    def test_no_dense_read_of_the_table(self, mirrored, kind):
        assert mirrored[kind]["dense_reads"] == 0

    def test_global_update_computed_once_for_every_replica(self, mirrored, kind):
        """Issue 24 item 4: on one worker the replicas hand their parts to
        one merge (no collective op) and the global batch's deltas are
        computed once, not once per replica (the previous code built 2x)."""
        report = mirrored[kind]
        assert report["one_update"]["unique"] > 0
        assert report["update_ops"] == report["one_update"]


class TestUnsupportedCases:
    def test_cross_replica_context_says_where_to_call(self, mirrored):
        message = mirrored["errors"]["cross_replica"]
        assert message.startswith("RuntimeError") and "strategy.run" in message
        assert mirrored["errors"]["cross_replica_read_only"] is None

    def test_plain_table_shared_by_replicas_is_refused(self, mirrored):
        message = mirrored["errors"]["plain_table"]
        assert message.startswith("ValueError") and "strategy.scope()" in message

    def test_mirrored_table_outside_its_strategy_is_refused(self, mirrored):
        message = mirrored["errors"]["outside_strategy"]
        assert message.startswith("RuntimeError") and "strategy.run" in message

    def test_other_strategies_are_refused(self, mirrored):
        message = mirrored["errors"]["central_storage"]
        assert message.startswith("NotImplementedError") and "CentralStorageStrategy" in message


@pytest.mark.parametrize("case", ["v2-classes", "v2-blog", "v1-classes", "v1-blog", "v2-blog-weighted"])
def test_keras_fit_follows_the_global_batch(case):
    """Keras 2 fit under MirroredStrategy (both classes): CenterLoss on the
    embedding of a two-output model, and the blog's cl.loss on the logits.
    The model is frozen, so predict gives the features each step used."""
    done = run_python(script("keras2_mirrored_fit"), SUPPORT, case, timeout=300)
    report = result_of(done.stdout, done.stderr)[case]
    assert isinstance(report, dict), report
    # The user's model owns one mirrored table, used by every replica's clone.
    assert report["tables"] == 1 and report["values"] == 2
    assert report["name"] == "center_loss/centers:0"
    assert report["moved"] > 0.1
    assert report["copies_equal"]
    assert report["center_dev"] < TOLERANCE
    assert report["eval_frozen"]
    assert report["checkpoint_ok"]


@pytest.mark.parametrize("case, message", [
    ("one_table_two_outputs", "two losses update the centers table"),
    ("center_metrics", "center metrics .* are not supported under MirroredStrategy")])
def test_keras_cases_that_cannot_be_exact_under_a_strategy_are_refused(case, message):
    done = run_python(script("keras2_mirrored_refusals"), case, timeout=300)
    report = result_of(done.stdout, done.stderr)[case]
    assert report["error"] and re.search(message, report["error"]), report
    assert report["unchanged"]


def test_multi_worker_mirrored_strategy_two_processes():
    reports = run_workers(script("multi_worker_center_loss"))
    assert [r["replicas"] for r in reports] == [2, 2]
    # Both workers' tables are bitwise identical after every step ...
    assert reports[0]["hashes"] == reports[1]["hashes"]
    assert len(set(reports[0]["hashes"])) == len(reports[0]["hashes"])  # they moved
    # ... and follow the paper's rule on the global batch.
    for report in reports:
        assert report["center_dev"] < TOLERANCE
        assert report["loss_dev"] < TOLERANCE


def test_keras_fit_under_multi_worker_mirrored_strategy():
    reports = run_workers(script("keras2_multi_worker_fit"))
    assert [r["replicas"] for r in reports] == [2, 2]
    assert reports[0]["hash"] == reports[1]["hash"]
    for report in reports:
        assert report["moved"] > 0.1 and report["absent_zero"]
        assert report["center_dev"] < TOLERANCE


