"""Centers in the files Keras 2 writes: cl's HDF5 group, and TF-format
checkpoints whose tables Keras cannot match by key.

HDF5 (`save_weights("m.h5")`, `save`, `cl.save_model`): Keras stores the
layers' weights only; cl adds a `cl_centers` group, one dataset per table in
creation order. TF format: the tables are checkpoint dependencies of the
model (`cl_centers`, or `cl_centers_part_<k>_of_<n>` for a table split by
rows); a table saved with another number of shards is read whole and split
here. `cl.keras2.model_methods` calls these from Keras's own methods, and
checks first (`check_values`, `check_tf_checkpoint`) that what a file holds
fits the model's tables, before Keras changes anything: TensorFlow's
graph-mode restore would assign a saved table of another shape as it is.
"""

import os

import numpy as np

from cl import compat
from cl.checkpoints import H5_GROUP, h5py_module, read_centers, read_h5_centers
from cl.graph import shards
from cl.keras2.state import centers_of
from cl.tf_checkpoints import (
    KERAS_ATTRIBUTE,
    checkpoint_prefix,
    checkpoint_reader,
    part_name,
    stored_shape,
    tracking_name,
)

_H5_FORMATS = ("h5", "hdf5", "keras")
_H5_SUFFIXES = (".h5", ".hdf5", ".keras")


def centers_values(model):
    """The model's tables, whole, as numpy arrays in creation order."""
    tables = centers_of(model)
    return compat.keras_backend(model).get_session().run([shards.whole(t) for t in tables])


def save_centers(model, filepath):
    """Writes the model's centers into an HDF5 file (group `cl_centers`)."""
    h5py = h5py_module()
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


def _shape_error(source, name, saved, table):
    return ValueError(
        f"{source}: the saved centers {name} have shape {list(saved)}, this model's "
        f"table '{table.name}' is {table.shape.as_list()}; nothing was loaded. Build "
        f"the model with the num_classes and feature size it was saved with, or read "
        f"the saved table with cl.read_centers and assign the rows you keep.")


def check_values(model, values, source):
    """Refuses whole `values` (from `source`, for messages) whose count or
    shapes do not fit the model's tables."""
    tables = centers_of(model)
    if len(values) != len(tables):
        raise ValueError(
            f"{source} holds {len(values)} centers table(s); the model has "
            f"{len(tables)}. Compile the model with the same cl loss(es) it "
            f"was saved with.")
    for index, (table, value) in enumerate(zip(tables, values)):
        if tuple(table.shape.as_list()) != np.shape(value):
            raise _shape_error(source, f"#{index}", np.shape(value), table)


def assign_centers(model, values, source):
    """Assigns whole `values` to the model's tables, checked first."""
    check_values(model, values, source)
    tables = centers_of(model)
    compat.keras_backend(model).batch_set_value(
        [pair for table, value in zip(tables, values)
         for pair in shards.split_rows(table, np.asarray(value, np.float32))])


def _shape_map(prefix):
    with checkpoint_reader(prefix) as reader:
        return reader.get_variable_to_shape_map()


def check_tf_checkpoint(model, filepath):
    """Refuses a TF-format checkpoint holding a table of another shape than
    the model's, from the checkpoint's shape map (no table is read)."""
    prefix = checkpoint_prefix(filepath)
    if prefix is None:
        return  # Keras's load_weights says what is missing
    shapes = _shape_map(prefix)
    for index, table in enumerate(centers_of(model)):
        saved = stored_shape(shapes, tracking_name(index))
        if saved is not None and saved != table.shape.as_list():
            raise _shape_error(prefix, f"'{tracking_name(index)}'", saved, table)


def tf_checkpoint_tables(filepath):
    """{index: whole table} of the Keras 2 tables in a TF-format checkpoint."""
    prefix = checkpoint_prefix(filepath)
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
    would leave it as it was without a word; read it whole and assign it.
    Shapes were checked before Keras loaded (`check_tf_checkpoint`)."""
    prefix = checkpoint_prefix(filepath)
    if prefix is None:
        return
    keys = _shape_map(prefix)
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
        moved += shards.split_rows(table, value)
    if moved:
        compat.keras_backend(model).batch_set_value(moved)


def is_h5_file(filepath):
    """An open h5py group, or the path of an existing HDF5 file."""
    h5py = h5py_module()
    if isinstance(filepath, h5py.Group):
        return True
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    return bool(path) and os.path.isfile(path) and h5py.is_hdf5(path)


def asks_for_h5(filepath, save_format):
    """Keras 2's own rule: an explicit save_format, else the suffix."""
    if save_format is not None:
        return str(save_format).lower().strip() in _H5_FORMATS
    return str(filepath).endswith(_H5_SUFFIXES)
