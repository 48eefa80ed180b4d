"""`cl.keras3.jax_table` under `keras.distribution` on JAX (4 forced host
devices; skipped on the other backends): `DataParallel`, a replicated
table, and `ModelParallel`, the centers split by rows on the model axis.
The layer and `CenterLossModel` follow the rule on the global batch after
every step (fit and train_on_batch), evaluate (and predict) move nothing,
and the compiled train step communicates nothing of size C.

Each runs one script of tests/scripts/ in a subprocess (the device count and
the HLO dump folder must be set before JAX initialises).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import keras3_or_skip

keras = keras3_or_skip()
if keras.backend.backend() != "jax":
    pytest.skip("keras.distribution is tested on the JAX backend (KERAS_BACKEND=jax)",
                allow_module_level=True)

TESTS = pathlib.Path(__file__).resolve().parents[1]
DATA_PARALLEL = TESTS / "scripts" / "keras3_jax_data_parallel.py"
MODEL_PARALLEL = TESTS / "scripts" / "keras3_jax_model_parallel.py"
RUNS = ["layer_fit", "layer_train_on_batch", "model_fit", "model_train_on_batch"]
REMATERIALIZATION = "nvoluntary full rematerialization"  # XLA's SPMD partitioner


class TestDataParallel:
    """Keras 3 on JAX under `keras.distribution.DataParallel` (4 forced host
    devices): the layer and `CenterLossModel` follow the rule on the global
    batch after every step (fit and train_on_batch), evaluate moves nothing,
    and the compiled train step communicates nothing of size C.

    tests/scripts/keras3_jax_data_parallel.py runs in a subprocess: the device
    count and the HLO dump folder must be set before JAX initialises.
    """

    @pytest.fixture(scope="class")
    def report(self, tmp_path_factory):
        dump = tmp_path_factory.mktemp("hlo")
        result = subprocess.run([sys.executable, str(DATA_PARALLEL), str(TESTS / "support"), str(dump)],
                                capture_output=True, text=True, timeout=300,
                                cwd=TESTS.parent)
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT "):])

    def test_four_devices_and_a_large_distinct_class_count(self, report):
        assert report["devices"] == 4 and report["global_batch"] % 4 == 0
        assert report["classes"] > 100 * max(report["global_batch"], report["dim"])

    @pytest.mark.parametrize("run", RUNS)
    def test_centers_follow_the_rule_on_the_global_batch(self, report, run):
        assert report[run]["deviation"] < 1e-5
        # The steps' batches are built so that each device's own update would
        # differ: the check above can tell the two apart.
        assert report[run]["per_device_rule_deviation"] > 0.1
        assert report[run]["moved_by_evaluate"] == 0.0

    @pytest.mark.parametrize("run", RUNS)
    def test_compiled_step_communicates_nothing_of_size_c(self, report, run):
        seen = report[run]
        assert seen["compiled_steps"] >= 1
        # The parse found the step's collectives (labels gathered, gradients
        # reduced), so the shape check below is not vacuous.
        assert {"all-gather", "all-reduce"} <= set(seen["opcodes"]), seen["collectives"]
        # Not C, nor a quarter of C (a table split over the 4 devices).
        assert seen["largest_dimension"] < report["classes"] // 4, seen["collectives"]

    @pytest.mark.parametrize("run", RUNS)
    def test_deltas_are_the_one_batch_by_dim_value_gathered(self, report, run):
        """Issue 24 item 4: each step gathers the batch's deltas once, and
        no [batch, dim] mask beside them (the previous code let XLA gather
        the mask and the products and select after: twice the bytes)."""
        assert report[run]["row_gathers"] and set(report[run]["row_gathers"]) == {1}, \
            report[run]["collectives"]


class TestModelParallel:
    """Keras 3 on JAX under `keras.distribution.ModelParallel` (4 forced host
    devices, meshes (batch 2, model 2) and (1, 4)), the centers split by rows
    on the model axis with `layout_map[".*centers"] = ("model", None)`: each
    device holds C/S rows, the layer and `CenterLossModel` follow the rule on
    the global batch after every step (fit and train_on_batch), evaluate and
    predict move nothing, the compiled train step communicates nothing of size
    C, XLA never rematerialises the labels for the label check, and a bad label
    still warns and is left out of the update.

    tests/scripts/keras3_jax_model_parallel.py runs in a subprocess: the device
    count and the HLO dump folder must be set before JAX initialises.
    """

    @pytest.fixture(scope="class")
    def run(self, tmp_path_factory):
        """`(report, stderr)` of the script."""
        dump = tmp_path_factory.mktemp("hlo")
        # XLA's warnings show at log level 1 (conftest sets 2, which hides them).
        result = subprocess.run([sys.executable, str(MODEL_PARALLEL), str(TESTS / "support"), str(dump)],
                                capture_output=True, text=True, timeout=300, cwd=TESTS.parent,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1"))
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT "):]), result.stderr

    @pytest.fixture(scope="class")
    def report(self, run):
        return run[0]

    def test_four_devices_and_a_large_class_count(self, report):
        assert report["devices"] == 4 and report["global_batch"] % 2 == 0
        assert report["classes"] > 100 * max(report["global_batch"], report["dim"])
        assert {tuple(report[name]["mesh"]) for name in RUNS} == {(2, 2), (1, 4)}

    @pytest.mark.parametrize("name", RUNS)
    def test_each_device_holds_its_rows_only(self, report, name):
        seen = report[name]
        rows = report["classes"] // seen["mesh"][1]
        # [rows of every shard..., shard count]: C/S rows on each of the 4 devices.
        assert seen["rows_before"] == [rows, 4]
        assert seen["rows_after"] == [rows, 4]

    @pytest.mark.parametrize("name", RUNS)
    def test_centers_follow_the_rule_on_the_global_batch(self, report, name):
        assert report[name]["deviation"] < 1e-5
        assert report[name]["moved_by_evaluate"] == 0.0
        assert report[name]["moved_by_predict"] == 0.0

    @pytest.mark.parametrize("name", RUNS)
    def test_compiled_step_communicates_nothing_of_size_c(self, report, name):
        seen = report[name]
        assert seen["compiled_steps"] >= 1
        # The parse found the step's collectives (the rows' reads reduced, the
        # head's gradients), so the size checks below are not vacuous.
        assert "all-reduce" in seen["opcodes"], seen["collectives"]
        # Not C, nor a model-axis share of it: no table gathered or reduced.
        assert seen["largest_dimension"] < report["classes"] // 4, seen["collectives"]
        assert seen["largest_elements"] <= report["global_batch"] * report["dim"], \
            seen["collectives"]

    def test_labels_are_not_rematerialised_for_the_label_check(self, run):
        stderr = run[1]
        warnings = [line for line in stderr.splitlines() if REMATERIALIZATION in line]
        assert not warnings, f"{len(warnings)} warning(s):\n" + "\n".join(warnings[:3])

    @pytest.mark.parametrize("name", RUNS)
    def test_a_bad_label_warns_and_is_left_out(self, report, name):
        bad = report[name]["bad_label"]
        assert bad["loss"] != bad["loss"]  # NaN, as on one device
        assert bad["deviation"] < 1e-5  # the other samples' update only
        assert len(bad["warnings"]) == 1, bad["warnings"]
        assert f"out-of-range label(s) [{report['classes']}] at batch position(s) [5]" \
            in bad["warnings"][0]
        assert "left out of its center update" in bad["warnings"][0]
