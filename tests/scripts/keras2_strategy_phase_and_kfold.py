"""Keras 2 fit under MirroredStrategy (2 logical CPUs), graph mode: a global
K.set_learning_phase(0) stops the center update, as without a strategy; and
a second model compiled with cl.loss in the same graph gets its own table.

Run by tests/graph_mode/test_keras2_state.py in a subprocess (logical
devices must be set before TensorFlow initialises). Prints one RESULT line.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, sys.argv[2])  # tests/support: the numpy reference
import reference  # noqa: E402

import cl  # noqa: E402
from cl import compat  # noqa: E402

keras = compat.keras_module()
K = compat.keras_backend()
C, B = 4, 8
STRATEGIES = {"v2": tf.distribute.MirroredStrategy,
              "v1": tf.compat.v1.distribute.MirroredStrategy}


def blog_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(C)(inputs))
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0))
    return model


def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, B)
    return rng.normal(size=(B, 3)).astype(np.float32), np.eye(C, dtype=np.float32)[y]


def learning_phase_zero(kind):
    """Max |centers| after fit with the learning phase set to 0 globally."""
    K.set_learning_phase(0)
    with STRATEGIES[kind](["/cpu:0", "/cpu:1"]).scope():
        model = blog_model()
    x, y = data()
    model.fit(x, y, batch_size=B, epochs=2, verbose=0)
    return float(np.abs(K.get_session().run(cl.centers_of(model)[0])).max())


def two_models_in_one_graph(kind):
    """Table names and each fold's largest deviation from the rule. (Keras
    opens a new session at each compile under a strategy, so a fold's
    values are read right after its fit.)"""
    strategy = STRATEGIES[kind](["/cpu:0", "/cpu:1"])
    x, y = data()
    names, deviations, moved = [], [], []
    for _ in range(2):
        with strategy.scope():
            model = blog_model()
        logits = model.predict(x, batch_size=B)
        model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=False)
        (table,) = cl.centers_of(model)
        expected = reference.update_centers(y.argmax(axis=1), logits, np.zeros((C, C)), 0.5)
        names.append(table.name)
        deviations.append(float(np.abs(K.get_session().run(table) - expected).max()))
        moved.append(float(np.abs(expected).max()))
    return {"names": names, "deviations": deviations, "moved": moved}


def safe(function, *args):
    try:
        return function(*args)
    except Exception as error:  # reported, not raised: the test shows it
        return f"{type(error).__name__}: {str(error)[:500]}"


if __name__ == "__main__":
    cl.NUM_CLASSES, cl.ALPHA = C, 0.5
    kind, case = sys.argv[1], sys.argv[3]
    cases = {"phase_zero": learning_phase_zero, "kfold": two_models_in_one_graph}
    print("RESULT " + json.dumps({case: safe(cases[case], kind)}), flush=True)
    # Closing a session after a distributed fit can wait forever on Keras's
    # tf.data generator threads: leave without closing it.
    os._exit(0)
