"""Keras 2 fit under MirroredStrategy behaves as without one (issue 14, 8-9):
a global K.set_learning_phase(0) stops the update, and a second model
compiled with cl.loss in the same graph (k-fold) gets a table of its own."""

import pytest
from helpers import SUPPORT, result_of, run_python, script


def result(kind, case):
    """Runs one case of the script in a process of its own."""
    done = run_python(script("keras2_strategy_phase_and_kfold"), kind, SUPPORT, case, timeout=300)
    return result_of(done.stdout, done.stderr)[case]


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
