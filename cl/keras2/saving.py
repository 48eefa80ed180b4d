"""Centers as model state on every route Keras 2 moves state through.

The tables are not layer weights (they are made by the loss at compile), so
cl extends Keras 2's graph-mode `Model` methods: `get_weights` /
`set_weights` (and so EarlyStopping(restore_best_weights=True) and copies
between models) carry the centers after the layers' weights; HDF5
`save_weights` / `save` / `load_weights` carry them in a `cl_centers`
group (also for a model loaded before it is compiled: the values wait for
the table). A model without cl tables behaves exactly as before. TF-format
checkpoints need none of this: the tables are checkpoint dependencies.
"""

import functools
import inspect
import os
import warnings

import numpy as np
import tensorflow as tf

from cl import compat
from cl.checkpoints import (
    H5_GROUP,
    KERAS_ATTRIBUTE,
    part_name,
    read_centers,
    read_h5_centers,
    tracking_name,
)
from cl.graph import shards
from cl.keras2.state import PENDING_ATTR, centers_of, remember_user_learning_phase

_H5_FORMATS = ("h5", "hdf5", "keras")
_H5_SUFFIXES = (".h5", ".hdf5", ".keras")


def _session(model):
    return compat.keras_backend(model).get_session()


def save_centers(model, filepath):
    """Writes the model's centers into an HDF5 file (group `cl_centers`)."""
    import h5py
    tables = centers_of(model)
    values = _session(model).run([shards.whole(table) for table in tables])
    f = filepath if isinstance(filepath, h5py.Group) else h5py.File(filepath, "a")
    try:
        if H5_GROUP in f:
            del f[H5_GROUP]
        group = f.create_group(H5_GROUP)
        for index, (table, value) in enumerate(zip(tables, values)):
            group.create_dataset(str(index), data=value).attrs["name"] = table.name
    finally:
        if f is not filepath:
            f.close()


def load_centers(model, filepath):
    """Restores centers saved by `save_centers` into the model's tables
    (matched by creation order; count and shapes must agree)."""
    values = read_h5_centers(filepath)
    if not values:
        raise ValueError(
            f"{filepath} holds no cl centers (no '{H5_GROUP}' group); it was "
            f"not saved by cl.save_model or a cl model's save_weights/save.")
    _assign(model, values, str(filepath))


def _assign(model, values, source):
    tables = centers_of(model)
    if len(values) != len(tables):
        raise ValueError(
            f"{source} holds {len(values)} centers table(s); the model has "
            f"{len(tables)}. Compile the model with the same cl loss(es) it "
            f"was saved with.")
    for table, value in zip(tables, values):
        if tuple(table.shape.as_list()) != value.shape:
            raise ValueError(f"{source}: saved centers of shape {value.shape} do "
                             f"not fit '{table.name}' {table.shape.as_list()}.")
    compat.keras_backend(model).batch_set_value(
        [pair for table, value in zip(tables, values)
         for pair in shards.split_rows(table, np.asarray(value, np.float32))])


def _tf_checkpoint_prefix(filepath):
    if tf.io.gfile.exists(filepath + ".index"):
        return filepath
    return tf.train.latest_checkpoint(filepath)


def _tf_checkpoint_tables(filepath):
    """{index: whole table} of the Keras 2 tables in a TF-format checkpoint."""
    prefix = _tf_checkpoint_prefix(filepath)
    tables = {}
    while prefix is not None:
        try:
            tables[len(tables)] = read_centers(prefix, tracking_name(len(tables)))
        except KeyError:
            break
    return tables


def _reshard_from_checkpoint(model, filepath):
    """After a TF-format load_weights: a table saved with another number of
    shards (or whole, or split) has keys Keras does not match, and Keras
    would leave it as it was without a word; read it whole and assign it."""
    prefix = _tf_checkpoint_prefix(filepath)
    if prefix is None:
        return
    keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    moved = []
    for index, table in enumerate(centers_of(model)):
        name = tracking_name(index)
        parts = shards.shards_of(table)
        tracked = {name if len(parts) == 1 else part_name(name, k, len(parts)): part.shape.as_list()
                   for k, part in enumerate(parts)}
        # Keras matches by key only, and assigns a saved shard of another
        # size as it is: only keys and shapes that all agree were restored.
        if all(keys.get(key + KERAS_ATTRIBUTE) == shape for key, shape in tracked.items()):
            continue
        try:
            value = read_centers(prefix, name)
        except KeyError:
            continue  # not in this checkpoint: Keras's rule for any weight
        if value.shape != tuple(table.shape.as_list()):
            raise ValueError(f"{prefix}: saved centers '{name}' of shape {value.shape} "
                             f"do not fit '{table.name}' {table.shape.as_list()}.")
        moved += shards.split_rows(table, value)
    if moved:
        compat.keras_backend(model).batch_set_value(moved)


def _is_h5_file(filepath):
    import h5py
    if isinstance(filepath, h5py.Group):
        return True
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    return bool(path) and os.path.isfile(path) and h5py.is_hdf5(path)


def _asks_for_h5(filepath, save_format):
    """Keras 2's own rule: an explicit save_format, else the suffix."""
    if save_format is not None:
        return str(save_format).lower().strip() in _H5_FORMATS
    return str(filepath).endswith(_H5_SUFFIXES)


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
        tables = centers_of(self)
        if not tables:
            return weights
        return weights + list(_session(self).run([shards.whole(table) for table in tables]))

    @functools.wraps(originals["set_weights"])
    def set_weights(self, weights):
        tables = centers_of(self)
        weights = list(weights)
        if tables and len(weights) == len(self.weights) + len(tables):
            originals["set_weights"](self, weights[:-len(tables)])
            _assign(self, weights[-len(tables):], "set_weights")
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
        if (centers_of(self) and _asks_for_h5(filepath, arguments.get("save_format"))
                and _is_h5_file(filepath)):
            save_centers(self, filepath)
        return result

    @functools.wraps(originals["save"])
    def save(self, *args, **kwargs):
        result = originals["save"](self, *args, **kwargs)
        arguments = _arguments(originals["save"], (self, *args), kwargs)
        filepath = arguments["filepath"]
        if not centers_of(self):
            return result
        if _is_h5_file(filepath):
            save_centers(self, filepath)
        else:
            warnings.warn(
                "cl: a model saved in this format comes back from load_model "
                "with zero centers in graph mode. Use cl.save_model(model, "
                "'model.h5') and cl.load_model('model.h5'), or save_weights.",
                stacklevel=2)
        return result

    @functools.wraps(originals["load_weights"])
    def load_weights(self, *args, **kwargs):
        result = originals["load_weights"](self, *args, **kwargs)
        filepath = _arguments(originals["load_weights"], (self, *args), kwargs)["filepath"]
        if _is_h5_file(filepath):
            values = read_h5_centers(filepath)
            if values and centers_of(self):
                _assign(self, values, str(filepath))
            elif values:
                # Loaded before compile: restored when the tables are made.
                self.__dict__[PENDING_ATTR] = dict(enumerate(values))
        elif centers_of(self):
            _reshard_from_checkpoint(self, str(filepath))
        else:
            # Loaded before compile: Keras restores a table later only if its
            # shards match the saved ones key for key; cl fills it whatever
            # its number of shards when it is made.
            pending = _tf_checkpoint_tables(str(filepath))
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
    if not _is_h5_file(filepath):
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
        _assign(model, values, str(filepath))
    elif values:
        model.__dict__[PENDING_ATTR] = dict(enumerate(values))
    return model
