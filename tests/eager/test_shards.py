"""cl.tf2.CenterLoss under tf.distribute.ParameterServerStrategy (issue 17,
item 4): the table a ShardedVariable split by rows over the ps tasks, steps
scheduled with ClusterCoordinator, each following the paper's rule on its
own batch, reading and writing only the batch's rows on their shards.

One subprocess (tests/scripts/tf2_parameter_server.py) builds an in-process
cluster on 127.0.0.1 (chief, 2 workers, 2 ps) and runs every check; the
tests below assert on its RESULT.
"""

import re

import pytest
from helpers import script_result_once

pytest.importorskip("tensorflow")

# float32 rounding against the float64 reference.
CENTER_TOLERANCE, LOSS_TOLERANCE = 1e-5, 1e-4
PS = ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    found = script_result_once(tmp_path_factory, "tf2_parameter_server", timeout=120)
    assert found["errors"] == {}, found["errors"]
    return found


@pytest.mark.parametrize("name, kind, rows", [
    ("fixed", "ShardedVariable", [5, 5]),       # FixedShardsPartitioner(2)
    ("min", "ShardedVariable", [6, 5]),         # MinSizePartitioner: uneven
    ("max", "ShardedVariable", [4, 4, 3]),      # MaxSizePartitioner: 3 shards on 2 ps
    ("plain", "CachingVariable", [10])])        # no partitioning: one variable on a ps
def test_table_is_split_by_rows_over_the_ps_tasks(report, name, kind, rows):
    layout = report["layout"][name]
    assert (layout["kind"], layout["rows"]) == (kind, rows)
    assert set(layout["devices"]) <= set(PS)
    assert report["replicas"] == 1


def test_each_scheduled_step_follows_the_rule_on_its_batch(report):
    # Plain, weighted, tensor training=False and unpartitioned, with
    # duplicates, a NaN sample and weight-0 samples; checked after every step.
    assert report["dev"]["center"] < CENTER_TOLERANCE
    assert report["dev"]["loss"] < LOSS_TOLERANCE  # from the pre-update centers
    assert report["dev"]["grad"] < CENTER_TOLERANCE  # x - c, pre-update
    assert report["moved"] and report["frozen"]
    assert report["eager_dev"] < LOSS_TOLERANCE  # called eagerly on the coordinator


def test_step_reads_and_writes_only_the_batch_rows_on_their_shards(report):
    ops = report["ops"]
    # No shard is ever read whole: no ReadVariableOp (reading the
    # ShardedVariable as a tensor concatenates every shard) ...
    assert "ReadVariableOp" not in ops, ops
    # ... one sparse gather and one scatter per shard: 2 + 2 + 3 + 1.
    assert ops.get("ResourceGather") == 8 and ops.get("ResourceScatterSub") == 8, ops


def test_bad_label_fails_the_fetch_and_changes_no_table(report):
    error = report["bad_label"]
    assert error and error.startswith("InvalidArgumentError"), error
    assert re.search(r"labels must be class ids in \[0, num_classes=1[01]\).*12", error, re.S)
    assert report["bad_label_unchanged"]
    assert report["next_step_moves"]  # the coordinator goes on after the error


@pytest.mark.parametrize("target", ["same_shards", "other_shards", "no_strategy"])
def test_checkpoint_round_trip_restores_the_values(report, target):
    assert report["checkpoint"][target] is True


def test_checkpoint_holds_one_whole_table_that_read_centers_reads(report):
    found = report["checkpoint"]
    # The shards are saved as slices of one [C, D] tensor under the module's key.
    assert found["keys"] == {"center/centers/.ATTRIBUTES/VARIABLE_VALUE": [10, 3]}
    assert found["read_centers_named"] is True  # read_centers(path, "center/centers")



@pytest.mark.parametrize("saved", ["read_centers", "read_centers_unsharded"])
def test_read_centers_without_a_name_reads_a_tf2_checkpoint(report, saved):
    # `center/centers`: not a default name, but the checkpoint's only table
    assert report["checkpoint"][saved] is True


@pytest.mark.parametrize("case, received", [("axis_1", "[1, 2]"), ("zero", "[0, 1]")])
def test_partitioner_that_does_not_split_rows_is_refused_before_anything_is_made(
        report, case, received):
    error = report["refusal"][case]
    assert error and error.startswith(f"ValueError: cl.tf2.CenterLoss '{case}'"), error
    assert received in error and "FixedShardsPartitioner" in error
    assert report["refusal"]["created"] == []
