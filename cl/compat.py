"""TensorFlow and Keras version plumbing, kept apart from the math.

Framework internals only: nothing of cl's own is imported here (the Keras 2
front-end reads the frames found here; see `cl.keras2.site`).

cl targets legacy Keras 2 in graph mode on two TensorFlow lines:
  * TF 2.15: `tf.keras` is Keras 2 (the `keras` 2.15 package).
  * TF 2.16 to 2.21: `tf.keras` is Keras 3; Keras 2 lives in `tf_keras`.
Everything that depends on which one is in use lives here.
"""

import sys

import tensorflow as tf

GRAPH_MODE_HINT = (
    "cl builds TF1-style graph ops (a tf.compat.v1.get_variable centers table "
    "updated with scatter_sub). Run in graph mode: call "
    "tf.compat.v1.disable_eager_execution() (or "
    "tf.compat.v1.disable_v2_behavior()) before building the model, and on "
    "TensorFlow >= 2.16 use Keras 2 (`import tf_keras`, or set "
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow). For Keras 3 (TensorFlow, "
    "JAX or PyTorch) use cl.keras3.CenterLoss, and for TF2 custom loops cl.tf2.CenterLoss: "
    "see docs/keras3.md and docs/tf2.md.")


def tf_version():
    """(major, minor) of the installed TensorFlow."""
    major, minor = tf.__version__.split(".")[:2]
    return int(major), int(minor)


def require_graph_mode(what):
    """Raises RuntimeError unless ops are being added to a TF1-style graph.

    Eagerly, `get_variable` would make a fresh table on every call and the
    update would be lost; inside a tf.function (Keras 3, or tf_keras with
    eager execution on) the same happens on every retrace. Both would train
    silently without center loss, so refuse loudly instead.
    """
    if tf.executing_eagerly():
        raise RuntimeError(
            f"{what} was called with eager execution enabled. {GRAPH_MODE_HINT}")
    if getattr(tf.compat.v1.get_default_graph(), "building_function", False):
        raise RuntimeError(
            f"{what} was called inside a tf.function (this is what Keras 3 and "
            f"eager tf_keras do in compile/fit). {GRAPH_MODE_HINT}")


# The function graphs TF2's control flow builds its bodies in (their module
# is internal: compared by name); TF1's marks the graph with a context.
_LOOP_GRAPHS = ("WhileBodyFuncGraph", "WhileCondFuncGraph")
_BRANCH_GRAPHS = ("CondBranchFuncGraph",)


def control_flow_body():
    """"loop" or "conditional" when ops are being added to a loop or branch
    body (TF2 or TF1 control flow) of the default graph, else None."""
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        kind = type(graph).__name__
        if kind in _LOOP_GRAPHS:
            return "loop"
        if kind in _BRANCH_GRAPHS:
            return "conditional"
        context = graph._get_control_flow_context()  # TF1 control flow, private
        if context is not None and context.IsWhileContext():
            return "loop"
        if context is not None and context.IsCondContext():
            return "conditional"
        graph = getattr(graph, "outer_graph", None)
    return None


def keras_module():
    """The Keras 2 module matching the installed TensorFlow.

    TF 2.15: `tf.keras`. TF >= 2.16: `tf_keras` (what `tf.keras` also is when
    TF_USE_LEGACY_KERAS=1).
    """
    if tf_version() < (2, 16):
        return tf.keras
    try:
        import tf_keras
    except ImportError as error:
        major, minor = tf_version()
        raise ImportError(
            f"cl's Keras integration needs Keras 2. TensorFlow {tf.__version__}"
            f" ships Keras 3 as tf.keras, so install the matching tf_keras: "
            f"pip install 'tf-keras~={major}.{minor}.0'") from error
    return tf_keras


# Estimator calls model_fn from this method, with the mode as a local:
# tf.estimator tells model_fn the mode and nothing else of the graph.
ESTIMATOR_FRAME = "_call_model_fn"


def estimator_mode():
    """"train", "eval" or "infer" while a tf.estimator Estimator builds its
    model_fn's graph, else None."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == ESTIMATOR_FRAME:
            owner = frame.f_locals.get("self")
            mode = frame.f_locals.get("mode")
            if isinstance(mode, str) and any(cls.__module__.startswith("tensorflow_estimator")
                                             for cls in type(owner).__mro__):
                return mode
        frame = frame.f_back
    return None


def keras2_root(model):
    """'tf_keras' or 'keras' if `model` is a Keras 2 object (also when its
    class is the user's subclass of a Keras 2 class), else None."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "tf_keras" or (root == "keras" and tf_version() < (2, 16)):
            return root
    return None


def _backend_of_root(root):
    if root == "tf_keras":
        from tf_keras.src import backend
        return backend
    from keras.src import backend
    return backend


def keras_backend(model=None):
    """The backend module (with `get_session`, `learning_phase`) of `model`.

    The session matters: `tensorflow.python.keras.backend` still imports on
    TF 2.21 but is a frozen old copy with a different session, so
    initialising centers there leaves them uninitialised for tf_keras.
    """
    if model is None:
        return _backend_of_root(keras_module().__name__.split(".")[0])
    root = keras2_root(model)
    if root is None:
        raise TypeError(
            f"cl supports Keras 2 models (tf_keras, or tf.keras on TensorFlow "
            f"2.15); received {type(model).__name__} from "
            f"'{type(model).__module__}'. {GRAPH_MODE_HINT}")
    return _backend_of_root(root)


def check_keras_model(model):
    """Raises a clear TypeError/RuntimeError unless `model` is usable by cl."""
    if keras2_root(model) is None:
        roots = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
        kind = "a Keras 3 model" if "keras" in roots else "an object that is not a Keras 2 model"
        raise TypeError(
            f"cl.compile_model received {kind} ({type(model).__name__} from "
            f"'{type(model).__module__}'). {GRAPH_MODE_HINT}")
    require_graph_mode("cl.compile_model")


# Keras 2's graph-mode compile (training_v1) builds each output's metrics in
# `_handle_metrics` and its loss in `_prepare_total_loss`, with the model as
# `self`. Private names: tests/graph_mode/test_compat.py fails loudly if Keras
# renames them (evaluate would move the centers again).
LOSS_FRAME, METRICS_FRAME = "_prepare_total_loss", "_handle_metrics"
LOAD_H5_FRAME = "load_model_from_hdf5"


def keras_compile_frame():
    """`(frame name, model, frame locals)` of the Keras 2 compile step that
    is building this loss or metric, or None (raw TF1 code)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in (LOSS_FRAME, METRICS_FRAME):
            model = frame.f_locals.get("self")
            if keras2_root(model) is not None:
                return frame.f_code.co_name, model, frame.f_locals
        frame = frame.f_back
    return None


# Keras 2 under a tf.distribute strategy (training_v1) compiles the user's
# model (the template) in cross-replica context, then clones it once per
# replica in one of these functions, whose `model` local is the template.
REPLICA_CLONE_FRAMES = ("_build_network_on_replica", "_clone_and_build_model")


def keras_replica_template():
    """The template model whose per-replica clone Keras 2 is compiling, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in REPLICA_CLONE_FRAMES:
            model = frame.f_locals.get("model")
            if keras2_root(model) is not None:
                return model
        frame = frame.f_back
    return None


def h5_file_being_loaded():
    """The open h5py.File of a Keras 2 `load_model('x.h5')` in progress (it
    compiles the model while the file is open), or None."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == LOAD_H5_FRAME:
            return frame.f_locals.get("f")
        frame = frame.f_back
    return None


def replace_control_inputs(op, new_inputs):
    """Makes `op` (not yet run by any session) wait for `new_inputs` only.

    Used to retarget one step's update hook when a second loss joins the
    same table during compile. Private Operation methods, present since TF 1.x.
    """
    op._remove_all_control_inputs()
    op._add_control_inputs([tensor.op for tensor in new_inputs])


def keras2_graph_model_class(root=None):
    """Keras 2's graph-mode Model class (`training_v1.Model`), which every
    graph-mode model (functional, Sequential, subclassed) inherits from."""
    root = root or keras_module().__name__.split(".")[0]
    if root == "tf_keras":
        from tf_keras.src.engine import training_v1
    else:
        from keras.src.engine import training_v1
    return training_v1.Model


def partitioned_variable_class():
    """What `get_variable` returns under a partitioner: TF has no public
    name for the class (TF 1.15 through 2.21 keep it here)."""
    from tensorflow.python.ops import variables
    return variables.PartitionedVariable
