"""Canary for the Keras 2 and TensorFlow internals cl relies on (cl.compat).

cl finds "which model is Keras compiling?" by the names of Keras 2's
functions on the stack and reads some of their locals (cl/compat.py, and
cl/keras2/site.py for the compile frames). If Keras renames one of them,
cl silently stops recognising the compile (evaluate would move the centers,
under a strategy the clones would get tables of their own, .h5 files would
load without their centers). These tests read the installed Keras 2
directly and fail naming the frame, before any indirect test does.
"""

import importlib
import inspect
import types

import pytest
import tensorflow as tf

from cl import compat

KERAS = compat.keras_module()
ROOT = KERAS.__name__.split(".")[0]  # "tf_keras", or "keras" on TF 2.15
VERSION = importlib.import_module(ROOT).__version__

# Frame name -> the locals cl reads from that frame.
COMPILE_FRAME_LOCALS = {
    # CompileSite: the model, the pass token, the output's endpoint and its
    # combined sample weights. (The site also asks this frame for `target`,
    # which only the metrics frame has: it serves metric reads.)
    compat.LOSS_FRAME: ("self", "masks", "endpoint", "sample_weight"),
    # CompileSite: the model, the pass token, the target and the output index.
    compat.METRICS_FRAME: ("self", "masks", "target", "i"),
}
H5_FRAME_LOCALS = ("f",)  # the open h5py.File
CLONE_FRAME_LOCALS = ("model",)  # the template model


def keras_module(path):
    name = f"{ROOT}.src.{path}"
    try:
        return importlib.import_module(name)
    except ImportError as error:
        pytest.fail(f"Keras 2 ({ROOT} {VERSION}) has no module {name}, where cl "
                    f"expects its frames: {error}")


def function_named(owner, name, frame_kind):
    function = getattr(owner, name, None)
    assert isinstance(function, types.FunctionType), (
        f"Keras 2 ({ROOT} {VERSION}) renamed or removed the {frame_kind} frame "
        f"{name!r} (expected on {owner.__name__}); cl.compat looks for it on the stack.")
    return function


def check_locals(function, names, frame_kind):
    missing = [name for name in names if name not in function.__code__.co_varnames]
    assert not missing, (
        f"Keras 2 ({ROOT} {VERSION}): the {frame_kind} frame {function.__name__!r} "
        f"no longer has the local(s) {missing} that cl reads from it "
        f"(it has {function.__code__.co_varnames}).")


def names_called_in(module):
    """Every name that code in `module` uses (compiled from its source, so
    decorated and nested functions count)."""
    found, codes = set(), [compile(inspect.getsource(module), module.__file__, "exec")]
    while codes:
        code = codes.pop()
        found.update(code.co_names)
        codes += [const for const in code.co_consts if isinstance(const, types.CodeType)]
    return found


def test_keras_module_is_keras_2():
    assert VERSION.startswith("2."), f"cl.compat.keras_module() is {ROOT} {VERSION}, not Keras 2"


@pytest.mark.parametrize("frame", sorted(COMPILE_FRAME_LOCALS))
def test_compile_frames_are_methods_of_the_graph_mode_model(frame):
    model_class = compat.keras2_graph_model_class()
    function = function_named(model_class, frame, "compile")
    check_locals(function, COMPILE_FRAME_LOCALS[frame], "compile")
    assert function.__code__.co_varnames[0] == "self"
    # Still on the compile path: something in training_v1 calls it.
    assert frame in names_called_in(importlib.import_module(model_class.__module__)), (
        f"Keras 2 ({ROOT} {VERSION}): nothing in {model_class.__module__} calls the "
        f"compile frame {frame!r} any more.")


def test_h5_load_frame():
    hdf5_format = keras_module("saving.legacy.hdf5_format")
    function = function_named(hdf5_format, compat.LOAD_H5_FRAME, "load_model('x.h5')")
    check_locals(function, H5_FRAME_LOCALS, "load_model('x.h5')")
    assert compat.LOAD_H5_FRAME in names_called_in(keras_module("saving.legacy.save")), (
        f"Keras 2 ({ROOT} {VERSION}): load_model no longer calls {compat.LOAD_H5_FRAME!r}.")


@pytest.mark.parametrize("frame", compat.REPLICA_CLONE_FRAMES)
def test_replica_clone_frames(frame):
    utils = keras_module("distribute.distributed_training_utils_v1")
    function = function_named(utils, frame, "replica clone")
    check_locals(function, CLONE_FRAME_LOCALS, "replica clone")
    assert function.__code__.co_varnames[0] == "model"
    assert frame in names_called_in(utils), (
        f"Keras 2 ({ROOT} {VERSION}): nothing in {utils.__name__} calls the replica "
        f"clone frame {frame!r} any more.")


@pytest.mark.parametrize("method", ["_remove_all_control_inputs", "_add_control_inputs"])
def test_operation_control_input_methods(method):
    assert callable(getattr(tf.Operation, method, None)), (
        f"TensorFlow {tf.__version__} renamed or removed Operation.{method}, which "
        f"cl.compat.replace_control_inputs uses.")


def test_replace_control_inputs(session):
    first, second = tf.constant(1.0, name="first"), tf.constant(2.0, name="second")
    with tf.control_dependencies([first]):
        hook = tf.no_op(name="hook")
    compat.replace_control_inputs(hook, [second])
    assert hook.control_inputs == [second.op]


# --- Control flow (issue 21 item 3) -------------------------------------------
# A center loss inside a loop or conditional body would update once per
# iteration (the iterations racing on the table under v1 control flow) or
# only when a branch runs, and `sess.run(train_op)` alone would never run it.
# cl refuses it when the graph is built (test_ops.py); `control_flow` (the
# conftest's fixture) builds with TF2's control flow or TF1's.


def test_control_flow_context_canary(session, control_flow):
    """The graph kinds and the private method cl reads to know it is in a body."""
    seen = []
    tf.while_loop(lambda i: i < 1, lambda i: (seen.append(compat.control_flow_body()), i + 1)[1],
                  [0])
    tf.cond(tf.constant(True), lambda: (seen.append(compat.control_flow_body()),
                                        tf.constant(1))[1], lambda: tf.constant(0))
    assert seen == ["loop", "conditional"]
    assert compat.control_flow_body() is None
