"""TF1 parameter servers: a row-split table under `replica_device_setter`
(tests/scripts/parameter_servers.py, one process, servers on 127.0.0.1)."""

import numpy as np
import pytest
from helpers import SUPPORT, free_ports, result_of, run_python, script


@pytest.fixture(scope="module")
def result():
    ports = ",".join(map(str, free_ports(4)))
    done = run_python(script("parameter_servers"), SUPPORT, ports, timeout=240)
    return result_of(done.stdout, done.stderr)


def test_shards_live_round_robin_on_the_ps_tasks(result):
    assert result["rows"] == [[3, 4]] * 4
    assert sorted(result["devices"]) == ["/job:ps/task:0"] * 2 + ["/job:ps/task:1"] * 2
    assert result["devices"][0] != result["devices"][1]


def test_a_step_reads_and_writes_only_rows(result):
    # VariableShape: the shard's shape from its metadata (issue 21 item 9's
    # check of a restored table), never a read of its values.
    assert result["shard_ops"] == ["ResourceGather", "ResourceScatterSub", "VarIsInitializedOp",
                                   "VariableShape"]


def test_each_workers_step_applies_the_rule_to_its_own_batch(result):
    # worker 0 alone for 3 steps, then the two alternating; compared after
    # every step, as seen from the other worker's session
    assert len(result["sequential_errors"]) == 8
    assert max(result["sequential_errors"]) < 1e-5


def test_concurrent_workers_on_disjoint_classes_each_follow_their_own_updates(result):
    assert result["moved"] > 0.1
    assert result["concurrent_error"] < 1e-5
    assert np.isfinite(result["concurrent_error"])
