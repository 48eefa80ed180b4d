"""`cl.keras3.tf_table`: cl.keras3 on TensorFlow under
tf.distribute.MirroredStrategy (issue 16, item 2), with the user's standard
Keras code: the layer and CenterLossModel built and compiled in
strategy.scope(), trained with fit.
Against the numpy reference applied to the GLOBAL batch (every replica's
batch concatenated).

The replicas are 2 logical CPU devices, which must be configured before
TensorFlow initialises, so tests/scripts/keras3_mirrored_fit.py runs in a
subprocess, as `python -c` from the folder pytest runs in (so `import cl`
finds the checkout under test), and reports its worst deviations. Other
strategies are refused, on every route, before any change. Skipped on the
other backends.
"""

import json
import textwrap

import pytest
from conftest import keras3_or_skip
from helpers import SUPPORT, once_per_run, run_python, script

keras = keras3_or_skip()
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.distribute is TensorFlow's (KERAS_BACKEND=tensorflow)")

from keras3_steps import TF  # noqa: E402

RUNS = ["layer", "layer_weighted", "model"]
# float32 rounding against the float64 reference.
CENTER_TOLERANCE, LOSS_TOLERANCE = 1e-5, 1e-5


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    def produce(_):
        done = run_python(script("keras3_mirrored_fit"), SUPPORT, timeout=240)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT "):])
    return once_per_run(tmp_path_factory, "keras3_mirrored_fit", produce)


@pytest.mark.parametrize("run", RUNS)
def test_table_is_mirrored_with_only_first_replica(report, run):
    assert (report[run]["kind"], report[run]["aggregation"], report[run]["copies"]) == \
        ("MirroredVariable", "ONLY_FIRST_REPLICA", 2)


@pytest.mark.parametrize("run", RUNS)
def test_fit_copies_bitwise_equal_and_follow_the_global_batch(report, run):
    # 3 fits of 4 steps each (batches 8, 8, 8 and a short 5, split 3/2);
    # "layer_weighted" and "model" pass fit's sample_weight.
    assert report[run]["steps"] == 12
    assert report[run]["copies_equal"] and report[run]["moved"]
    assert report[run]["center_dev"] < CENTER_TOLERANCE


@pytest.mark.parametrize("run", RUNS)
def test_evaluate_predict_and_validation_never_move_the_centers(report, run):
    assert report[run]["frozen_outside_training"]
    assert report[run]["validation_dev"] < CENTER_TOLERANCE


@pytest.mark.parametrize("run", RUNS)
def test_loss_is_the_one_device_loss(report, run):
    assert report[run]["loss_dev"] < LOSS_TOLERANCE


@pytest.mark.parametrize("run", RUNS)
def test_keras_file_round_trip_restores_every_copy(report, run):
    assert report[run]["round_trip"]


def test_one_device_strategy_takes_the_one_device_path(report):
    assert report["one_device"]["kind"] == "ResourceVariable"
    assert report["one_device"]["center_dev"] < CENTER_TOLERANCE


def test_other_strategies_refused(report):
    assert report["refused"] == (
        "CenterLoss 'center' does not support CentralStorageStrategy (2 replicas): its "
        "replicas' centers would drift apart. Use tf.distribute.MirroredStrategy, "
        "MultiWorkerMirroredStrategy, or cl.keras3 on one device (no strategy).")


def test_each_replica_reads_its_batch_rows_once(report):
    """Issue 22 item 1, issue 24: in a training call each replica reads its
    copy of the table once, its own batch's rows (the loss, the metrics and
    the differences it sends the other replicas use those: no read of the
    global batch's rows), then scatters once."""
    assert report["table_ops"]["per_copy"] == [["ResourceGather", "ResourceScatterSub"]] * 2


def test_global_update_computed_once_for_every_replica(report):
    """Issue 24 item 4: on one worker the replicas hand their parts to one
    merge (no collective op: the previous code built 12) and the global
    batch's deltas are computed once, not once per replica (2x before)."""
    ops = report["table_ops"]
    assert ops["one_update"]["unique"] > 0
    assert {"unique": ops["unique"], "collectives": ops["collectives"]} == ops["one_update"]


@pytest.mark.skipif(not TF, reason="tf.distribute is TensorFlow's")
class TestStrategies:
    """Issue 14 item 6 (Keras 3): an unsupported strategy (CentralStorageStrategy) is refused
    on every route before any change; MirroredStrategy is exact (above)."""

    def test_every_route_of_an_unsupported_strategy_refused_before_any_change(self):
        # MirroredStrategy is exact (tests/eager/test_keras3_tf_table.py);
        # CentralStorageStrategy would update one table per replica.
        code = textwrap.dedent("""
            import numpy as np, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            import keras
            from cl.keras3 import CenterLoss, CenterLossModel
            strategy = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
            def refused(build):
                try:
                    build()
                except NotImplementedError as error:
                    return "does not support CentralStorageStrategy" in str(error)
                return False
            def functional():
                x, y = keras.Input((3,)), keras.Input((), dtype="int32")
                keras.Model([x, y], CenterLoss(5)([x, y]))
            def wrapped():
                x = keras.Input((3,))
                CenterLossModel(keras.Model(x, [keras.layers.Dense(5)(x), x]), 5)
            with strategy.scope():
                print("functional", refused(functional))
                print("wrapped", refused(wrapped))
            layer = CenterLoss(5)  # built outside, called under the strategy
            layer.build((None, 3))
            x = tf.ones((4, 3)); y = tf.constant([0, 1, 1, 2])
            print("run", refused(lambda: strategy.run(
                tf.function(lambda: layer([x, y], training=True)))))
            print("unchanged", not np.any(layer.centers.numpy()))
        """)
        result = run_python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["functional", "True", "wrapped", "True", "run", "True",
                                         "unchanged", "True"], result.stdout
