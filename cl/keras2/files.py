"""Centers in the files Keras 2 writes: cl's HDF5 group, and TF-format
checkpoints whose tables Keras cannot match by key.

HDF5 (`save_weights("m.h5")`, `save`, `cl.save_model`): Keras stores the
layers' weights only; cl adds a `cl_centers` group, one dataset per table in
creation order. TF format: the tables are checkpoint dependencies of the
model (`cl_centers`, or `cl_centers_part_<k>_of_<n>` for a table split by
rows); a table saved with another number of shards is read whole and split
here. `cl.keras2.model_methods` calls these from Keras's own methods.
"""

import os

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
from cl.keras2.state import centers_of

_H5_FORMATS = ("h5", "hdf5", "keras")
_H5_SUFFIXES = (".h5", ".hdf5", ".keras")


def centers_values(model):
    """The model's tables, whole, as numpy arrays in creation order."""
    tables = centers_of(model)
    return compat.keras_backend(model).get_session().run([shards.whole(t) for t in tables])


def save_centers(model, filepath):
    """Writes the model's centers into an HDF5 file (group `cl_centers`)."""
    import h5py
    tables = centers_of(model)
    values = centers_values(model)
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
    assign_centers(model, values, str(filepath))


def assign_centers(model, values, source):
    """Assigns whole `values` (from `source`, for messages) to the model's
    tables, after checking their count and shapes."""
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


def tf_checkpoint_tables(filepath):
    """{index: whole table} of the Keras 2 tables in a TF-format checkpoint."""
    prefix = _tf_checkpoint_prefix(filepath)
    tables = {}
    while prefix is not None:
        try:
            tables[len(tables)] = read_centers(prefix, tracking_name(len(tables)))
        except KeyError:
            break
    return tables


def reshard_from_checkpoint(model, filepath):
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


def is_h5_file(filepath):
    """An open h5py group, or the path of an existing HDF5 file."""
    import h5py
    if isinstance(filepath, h5py.Group):
        return True
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    return bool(path) and os.path.isfile(path) and h5py.is_hdf5(path)


def asks_for_h5(filepath, save_format):
    """Keras 2's own rule: an explicit save_format, else the suffix."""
    if save_format is not None:
        return str(save_format).lower().strip() in _H5_FORMATS
    return str(filepath).endswith(_H5_SUFFIXES)
