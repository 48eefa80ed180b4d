"""TensorFlow and Keras version plumbing, kept apart from the math.

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
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow), not Keras 3.")


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


def _backend_of_module(module_name):
    root = module_name.split(".")[0]
    if root == "tf_keras":
        from tf_keras.src import backend
        return backend
    if root == "keras" and tf_version() < (2, 16):
        from keras.src import backend
        return backend
    raise TypeError(
        f"cl supports Keras 2 models (tf_keras, or tf.keras on TensorFlow "
        f"2.15); received an object from the '{root}' package. "
        f"{GRAPH_MODE_HINT}")


def keras_backend(model=None):
    """The backend module (with `get_session`, `learning_phase`) of `model`.

    The session matters: `tensorflow.python.keras.backend` still imports on
    TF 2.21 but is a frozen old copy with a different session, so
    initialising centers there leaves them uninitialised for tf_keras.
    """
    if model is not None:
        return _backend_of_module(type(model).__module__)
    return _backend_of_module(keras_module().__name__)


def check_keras_model(model):
    """Raises a clear TypeError/RuntimeError unless `model` is usable by cl."""
    module = type(model).__module__
    if module.split(".")[0] == "keras" and tf_version() >= (2, 16):
        raise TypeError(
            f"cl.compile_model received a Keras 3 model ({type(model).__name__}"
            f" from '{module}'). {GRAPH_MODE_HINT}")
    _backend_of_module(module)
    require_graph_mode("cl.compile_model")


_KERAS_COMPILE_FRAMES = ("_handle_metrics", "_compile_weights_loss_and_weighted_metrics")


def keras_model_being_compiled():
    """The Keras 2 model whose `compile` is building this loss, or None.

    Keras 2's graph-mode compile builds metrics in `_handle_metrics` and
    losses in `_compile_weights_loss_and_weighted_metrics`. Knowing we are there lets
    the update follow Keras's learning phase (so evaluate and validation
    never move the centers), gives each model its own table, and lets cl
    attach the table to the model's checkpoints. A raw TF1 loop is never
    inside it, so its update stays unconditional.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in _KERAS_COMPILE_FRAMES:
            model = frame.f_locals.get("self")
            root = type(model).__module__.split(".")[0]
            if root in ("tf_keras", "keras"):
                return model
        frame = frame.f_back
    return None

