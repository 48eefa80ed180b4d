"""Centers as model state on every route Keras 2 moves state through.

The tables are not layer weights (they are made by the loss at compile), so
cl extends Keras 2's graph-mode `Model` methods: `get_weights` /
`set_weights` (and so EarlyStopping(restore_best_weights=True) and copies
between models) carry the centers after the layers' weights; HDF5
`save_weights` / `save` / `load_weights` carry them in a `cl_centers`
group (also for a model loaded before it is compiled: the values wait for
the table). A model without cl tables behaves exactly as before. TF-format
checkpoints need none of this: the tables are checkpoint dependencies
(`cl.keras2.files` has both formats).
"""

import functools
import inspect
import os
import warnings

from cl import compat
from cl.checkpoints import read_h5_centers
from cl.keras2 import files
from cl.keras2.state import PENDING_ATTR, centers_of, remember_user_learning_phase


def _arguments(method, args, kwargs):
    bound = inspect.signature(method).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _extend(cls):
    """Wraps the state-moving methods of `cls` once."""
    # Long, on purpose: five small wrappers that share `originals` and are
    # installed together; apart, each would need the originals passed in.
    originals = {name: getattr(cls, name) for name in
                 ("get_weights", "set_weights", "save_weights", "load_weights", "save")}

    @functools.wraps(originals["get_weights"])
    def get_weights(self):
        weights = originals["get_weights"](self)
        if not centers_of(self):
            return weights
        return weights + list(files.centers_values(self))

    @functools.wraps(originals["set_weights"])
    def set_weights(self, weights):
        tables = centers_of(self)
        weights = list(weights)
        if tables and len(weights) == len(self.weights) + len(tables):
            files.check_values(self, weights[-len(tables):], "set_weights")  # before any change
            originals["set_weights"](self, weights[:-len(tables)])
            files.assign_centers(self, weights[-len(tables):], "set_weights")
            return
        if tables and len(weights) == len(self.weights):
            warnings.warn(
                f"cl: set_weights received the layers' weights but no centers "
                f"for this model's {len(tables)} cl table(s); the centers are "
                f"left as they are. Copy them with source.get_weights() from a "
                f"model compiled with the same cl loss.", stacklevel=2)
        originals["set_weights"](self, weights)

    @functools.wraps(originals["save_weights"])
    def save_weights(self, *args, **kwargs):
        result = originals["save_weights"](self, *args, **kwargs)
        arguments = _arguments(originals["save_weights"], (self, *args), kwargs)
        filepath = arguments["filepath"]
        if (centers_of(self) and files.asks_for_h5(filepath, arguments.get("save_format"))
                and files.is_h5_file(filepath)):
            files.save_centers(self, filepath)
        return result

    @functools.wraps(originals["save"])
    def save(self, *args, **kwargs):
        result = originals["save"](self, *args, **kwargs)
        arguments = _arguments(originals["save"], (self, *args), kwargs)
        filepath = arguments["filepath"]
        if not centers_of(self):
            return result
        if files.is_h5_file(filepath):
            files.save_centers(self, filepath)
        else:
            warnings.warn(
                "cl: a model saved in this format comes back from load_model "
                "with zero centers in graph mode. Use cl.save_model(model, "
                "'model.h5') and cl.load_model('model.h5'), or save_weights.",
                stacklevel=2)
        return result

    @functools.wraps(originals["load_weights"])
    def load_weights(self, *args, **kwargs):
        filepath = _arguments(originals["load_weights"], (self, *args), kwargs)["filepath"]
        h5 = files.is_h5_file(filepath)
        values = read_h5_centers(filepath) if h5 else []
        # Refused before Keras loads anything: in graph mode it would assign
        # a saved table of another shape as it is.
        if values and centers_of(self):
            files.check_values(self, values, str(filepath))
        elif centers_of(self) and not h5:
            files.check_tf_checkpoint(self, str(filepath))
        result = originals["load_weights"](self, *args, **kwargs)
        if h5:
            if values and centers_of(self):
                files.assign_centers(self, values, str(filepath))
            elif values:
                # Loaded before compile: restored when the tables are made.
                self.__dict__[PENDING_ATTR] = dict(enumerate(values))
        elif centers_of(self):
            files.reshard_from_checkpoint(self, str(filepath))
        else:
            # Loaded before compile: Keras restores a table later only if its
            # shards match the saved ones key for key; cl fills it whatever
            # its number of shards when it is made.
            pending = files.tf_checkpoint_tables(str(filepath))
            if pending:
                self.__dict__[PENDING_ATTR] = pending
        return result

    for name, method in (("get_weights", get_weights), ("set_weights", set_weights),
                         ("save_weights", save_weights), ("load_weights", load_weights),
                         ("save", save)):
        setattr(cls, name, method)
    # Not state, but the same extension point: a global K.set_learning_phase
    # must reach the replicas' clones under a strategy (see cl.keras2.site).
    for name in ("fit", "evaluate"):
        setattr(cls, name, remember_user_learning_phase(getattr(cls, name)))
    cls._cl_state_routes = True


def install():
    """Extends the Keras 2 graph-mode Model class (idempotent)."""
    cls = compat.keras2_graph_model_class()
    if not cls.__dict__.get("_cl_state_routes"):
        _extend(cls)


def custom_objects():
    """What `load_model` needs for models compiled with cl's losses/metrics."""
    from cl import ops
    from cl.keras2 import losses, metrics
    distance, ratio = metrics.center_metrics()
    return {
        "loss": ops.loss, "categorical_accuracy": ops.categorical_accuracy,
        "accuracy": metrics.accuracy, "CenterLoss": losses.CenterLoss,
        "SoftmaxCenterLoss": losses.SoftmaxCenterLoss,
        "SparseSoftmaxLoss": losses.SparseSoftmaxLoss,
        "center_distance": distance, "center_ratio": ratio,
    }


def save_model(model, filepath):
    """`model.save` to HDF5, with the centers in the same file."""
    if not str(filepath).endswith((".h5", ".hdf5")):
        raise ValueError(f"cl.save_model writes HDF5; give a .h5 path, received {filepath!r}.")
    install()
    model.save(filepath, save_format="h5")
    if not centers_of(model):
        warnings.warn("cl.save_model: this model has no cl centers (compile it "
                      "with a cl loss first).", stacklevel=2)


def load_model(filepath, custom_objects=None, compile=True):
    """`load_model` for a file from `cl.save_model`, centers restored.

    With `compile=False` the centers wait on the model and are restored
    when it is compiled with its cl loss.
    """
    if not files.is_h5_file(filepath):
        raise ValueError(
            f"cl.load_model reads the HDF5 files cl.save_model writes; "
            f"{filepath!r} is not an HDF5 file"
            f"{' (it is a directory: a SavedModel?)' if os.path.isdir(str(filepath)) else ''}. "
            f"For other formats use keras.models.load_model and restore the "
            f"centers from a save_weights checkpoint.")
    install()
    objects = dict(globals()["custom_objects"]())
    objects.update(custom_objects or {})
    keras = compat.keras_module()
    model = keras.models.load_model(filepath, custom_objects=objects, compile=compile)
    values = read_h5_centers(filepath)
    if compile and values:
        files.assign_centers(model, values, str(filepath))
    elif values:
        model.__dict__[PENDING_ATTR] = dict(enumerate(values))
    return model
