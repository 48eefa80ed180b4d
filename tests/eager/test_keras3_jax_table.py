"""Keras 3 on JAX under `keras.distribution.DataParallel` (4 forced host
devices): the layer and `CenterLossModel` follow the rule on the global
batch after every step (fit and train_on_batch), evaluate moves nothing,
and the compiled train step communicates nothing of size C.

tests/scripts/keras3_jax_data_parallel.py runs in a subprocess: the device
count and the HLO dump folder must be set before JAX initialises.
"""

import json
import pathlib
import subprocess
import sys

import pytest
from conftest import keras3_or_skip

keras = keras3_or_skip()
if keras.backend.backend() != "jax":
    pytest.skip("keras.distribution.DataParallel is tested on the JAX backend "
                "(KERAS_BACKEND=jax)", allow_module_level=True)

TESTS = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = TESTS / "scripts" / "keras3_jax_data_parallel.py"
RUNS = ["layer_fit", "layer_train_on_batch", "model_fit", "model_train_on_batch"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    dump = tmp_path_factory.mktemp("hlo")
    result = subprocess.run([sys.executable, str(SCRIPT), str(TESTS / "support"), str(dump)],
                            capture_output=True, text=True, timeout=300,
                            cwd=TESTS.parent)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_four_devices_and_a_large_distinct_class_count(report):
    assert report["devices"] == 4 and report["global_batch"] % 4 == 0
    assert report["classes"] > 100 * max(report["global_batch"], report["dim"])


@pytest.mark.parametrize("run", RUNS)
def test_centers_follow_the_rule_on_the_global_batch(report, run):
    assert report[run]["deviation"] < 1e-5
    # The steps' batches are built so that each device's own update would
    # differ: the check above can tell the two apart.
    assert report[run]["per_device_rule_deviation"] > 0.1
    assert report[run]["moved_by_evaluate"] == 0.0


@pytest.mark.parametrize("run", RUNS)
def test_compiled_step_communicates_nothing_of_size_c(report, run):
    seen = report[run]
    assert seen["compiled_steps"] >= 1
    # The parse found the step's collectives (labels gathered, gradients
    # reduced), so the shape check below is not vacuous.
    assert {"all-gather", "all-reduce"} <= set(seen["opcodes"]), seen["collectives"]
    # Not C, nor a quarter of C (a table split over the 4 devices).
    assert seen["largest_dimension"] < report["classes"] // 4, seen["collectives"]
