"""Keras 2 fit under MirroredStrategy behaves as without one (issue 14, 8-9):
a global K.set_learning_phase(0) stops the update, and a second model
compiled with cl.loss in the same graph (k-fold) gets a table of its own."""

import json
import os

import pytest
from helpers import run_python

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(TESTS, "scripts", "keras2_strategy_phase_and_kfold.py")


def result(kind, case):
    """Runs one case of the script in a process of its own."""
    with open(SCRIPT) as script:
        done = run_python(script.read(), kind, TESTS, case, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])[case]


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_global_learning_phase_zero_stops_the_update(kind):
    assert result(kind, "phase_zero") == 0.0


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_second_model_in_one_graph_gets_its_own_table(kind):
    kfold = result(kind, "kfold")
    assert isinstance(kfold, dict), kfold
    assert kfold["names"] == ["center_loss/centers:0", "center_loss_1/centers:0"]
    assert max(kfold["deviations"]) < 1e-5
    assert min(kfold["moved"]) > 0.1
