"""`read_centers`: the centers in any file cl's front-ends write.

For migrating between front-ends: read a trained table as numpy, then
assign it to the new one (`cl.tf2.CenterLoss(...).load(a)`,
`cl.keras3.CenterLoss` layer `.centers.assign(a)`; both refuse another
shape; TF1 code: `cl.get_centers().load(a, session)`). `tf.train.Checkpoint`
cannot do this: it silently ignores the name-based checkpoints a
`tf.compat.v1.train.Saver` writes.

Formats, and the table read when `name` is None (in a TensorFlow checkpoint
holding none at those names, its only centers table, if it has just one):
  * `tf.compat.v1.train.Saver` checkpoint (prefix, folder, or the prefix's
    `.index` / `.data-*` file): `center_loss/centers`.
  * tf_keras TF-format checkpoint (`model.save_weights("ckpt")`): `cl_centers`.
  * HDF5 from `cl.save_model` / `save_weights("m.h5")`: group `cl_centers`,
    dataset "0" (each dataset's attribute "name" holds the variable name).
  * Keras 3 `.keras` (a zip holding `model.weights.h5`) and `.weights.h5`:
    the `centers` of the one `cl.keras3.CenterLoss` layer (also inside a
    `CenterLossModel`). Keras 3 keys such a layer's group `center_loss`,
    `center_loss_1`, ... after its class, whatever the layer's name.
HDF5 and Keras 3 files need only h5py; the TensorFlow formats need TensorFlow.
"""

import glob
import os
import re
import zipfile

import numpy as np

# The names every writer uses (the graph tables, Keras 2 checkpoints and
# HDF5 files), so that read_centers finds what they wrote.
CENTERS_NAME = "centers"
DEFAULT_SCOPE = "center_loss"
H5_GROUP = "cl_centers"
SAVER_DEFAULT = f"{DEFAULT_SCOPE}/{CENTERS_NAME}"
KERAS_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"
KERAS3_WEIGHTS = "model.weights.h5"
_KERAS3_LAYER_KEY = re.compile(r"center_loss(_\d+)?$")
_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def tracking_name(index):
    """Name of a Keras 2 model's index-th table in its checkpoints."""
    return H5_GROUP if index == 0 else f"{H5_GROUP}_{index}"


def part_name(name, index, count):
    """The checkpoint name of shard `index` of `count` of a table split by
    rows that a Keras 2 model tracks as `name` (`cl_centers_part_0_of_4`).
    The count is in the name: a checkpoint of 4 shards never matches a model
    of 3 by key (TF would assign a shard of another size as it is)."""
    return f"{name}_part_{index}_of_{count}"


def read_h5_centers(h5):
    """The centers arrays in cl's HDF5 group (a path or an open h5py group),
    in table order; [] if there is none."""
    import h5py
    if not isinstance(h5, h5py.Group):
        with h5py.File(h5, "r") as f:
            return read_h5_centers(f)
    if H5_GROUP not in h5:
        return []
    group = h5[H5_GROUP]
    return [np.asarray(group[str(i)]) for i in range(len(group))]


def read_centers(path, name=None):
    """The centers table `name` stored in `path`, as a numpy array.

    Args:
      path: a checkpoint prefix or folder (Saver, tf_keras TF format), a
        checkpoint's `.index` or `.data-*` file, an `.h5` file, or a Keras 3
        `.keras` / `.weights.h5` file.
      name: the table: a Saver variable name (`center_loss/centers`, `:0`
        optional), a tf_keras key (`cl_centers`, `cl_centers_1`, or the full
        `cl_centers/.ATTRIBUTES/VARIABLE_VALUE`), for cl's HDF5 the dataset
        index ("0") or the stored variable name, for Keras 3 files the
        layer's name (`center_loss`, or `<layer name>/centers`) or its HDF5
        group (`layers/center_loss_1`). None: see the module doc.

    Raises:
      KeyError naming the tables found, when `name` is not among them (or,
        for None, when a Keras 3 file holds several).
      FileNotFoundError when `path` holds no checkpoint.
      OSError when a checkpoint's data cannot be read (truncated, missing).
    """
    path = os.fspath(path)
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if KERAS3_WEIGHTS not in archive.namelist():
                raise KeyError(f"{path} is a zip file but not a Keras 3 .keras file with "
                               f"weights: no {KERAS3_WEIGHTS} among {archive.namelist()}.")
            with archive.open(KERAS3_WEIGHTS) as weights:
                return _read_h5(weights, name, f"{path} ({KERAS3_WEIGHTS})")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, KERAS3_WEIGHTS)):
        return _read_h5(os.path.join(path, KERAS3_WEIGHTS), name, path)  # unzipped .keras
    if os.path.isfile(path) and _is_hdf5(path):
        return _read_h5(path, name, path)
    return _read_tf_checkpoint(_CHECKPOINT_FILE.sub("", path), name)


def _is_hdf5(path):
    with open(path, "rb") as file:
        return file.read(8) == b"\x89HDF\r\n\x1a\n"


def _read_h5(source, name, path):
    import h5py
    with h5py.File(source, "r") as f:
        if H5_GROUP in f:
            return _read_cl_group(f[H5_GROUP], name, path)
        tables = _keras3_tables(f)
        if name is not None and str(name) in f and _table_of(f[str(name)]) is not None:
            return np.asarray(_table_of(f[str(name)]))  # any group or dataset, by path
        if not tables:
            raise KeyError(
                f"{path} holds no cl centers: no HDF5 group '{H5_GROUP}' (cl.save_model, "
                f"or a cl-compiled Keras 2 model's save_weights), and no Keras 3 "
                f"cl.keras3.CenterLoss layer (a group keyed center_loss, center_loss_1, "
                f"...). Pass name= the HDF5 path of the layer's group to read another.")
        found = [f"{key} ({layer})" for key, (layer, _) in sorted(tables.items())]
        if name is None:
            if len(tables) > 1:
                raise KeyError(f"{path} holds {len(tables)} centers tables; pass name= "
                               f"one of them (layer name or HDF5 group): {found}.")
            (_, table), = tables.values()
            return np.asarray(table)
        wanted = str(name).split(":")[0]
        for key, (layer, table) in tables.items():
            if wanted in (key, layer, f"{layer}/centers"):
                return np.asarray(table)
        raise KeyError(f"No centers table {wanted!r} in {path}; tables found: {found}.")


def _read_cl_group(group, name, path):
    stored = {index: _text(group[index].attrs.get("name", "")) for index in group}
    wanted = "0" if name is None else str(name)
    for index, variable in stored.items():
        if wanted in (index, variable, variable.split(":")[0]):
            return np.asarray(group[index])
    found = [f"{index} ({variable})" for index, variable in sorted(stored.items())]
    raise KeyError(f"No centers table {wanted!r} in {path}; tables found: {found}.")


def _table_of(item):
    """The `[C, D]` dataset of a Keras 3 layer group (its first variable, the
    centers for cl.keras3.CenterLoss), or of a dataset path; else None."""
    import h5py
    if isinstance(item, h5py.Group):
        variables = item.get("vars")
        if not isinstance(variables, h5py.Group) or "0" not in variables:
            return None
        item = variables["0"]
    return item if isinstance(item, h5py.Dataset) and item.ndim == 2 else None


def _keras3_tables(f):
    """{HDF5 group path: (layer name, dataset)} for each CenterLoss layer."""
    tables = {}

    def visit(key, item):
        table = _table_of(item)
        if table is not None and _KERAS3_LAYER_KEY.match(key.split("/")[-1]):
            layer = _text(item["vars"].attrs.get("name", key.split("/")[-1]))
            tables[key] = (layer, table)

    f.visititems(visit)
    return tables


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_tf_checkpoint(path, name):
    import tensorflow as tf
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(f"No checkpoint at {path!r} (no {path}.index, and not a "
                                f"folder with a 'checkpoint' file, nor an HDF5 or "
                                f".keras file).")
    reader = _damaged_checkpoint_guard(prefix, tf.train.load_checkpoint, prefix)
    keys = reader.get_variable_to_shape_map()
    if name is None:
        candidates = [SAVER_DEFAULT, H5_GROUP + KERAS_ATTRIBUTE]
    else:
        name = str(name).split(":")[0]
        candidates = [name, name + KERAS_ATTRIBUTE]
    for key in candidates:
        if key in keys:
            return _damaged_checkpoint_guard(prefix, reader.get_tensor, key)
        parts = _parts_of(key, keys)
        if parts:  # a Keras 2 table split by rows, tracked shard by shard
            return np.concatenate([_damaged_checkpoint_guard(prefix, reader.get_tensor, part)
                                   for part in parts], axis=0)
    tables = sorted({re.sub(r"_part_0_of_\d+$", "", key.replace(KERAS_ATTRIBUTE, ""))
                     for key in keys if re.search(
                         rf"(^|/)({CENTERS_NAME}|{H5_GROUP}(_\d+)?(_part_0_of_\d+)?)"
                         rf"({re.escape(KERAS_ATTRIBUTE)})?$", key)})
    if name is None and len(tables) == 1:
        # Not at a default name, but the only table there is (a tf.train.Checkpoint
        # of a cl.tf2.CenterLoss: `<attribute>/centers`).
        return _read_tf_checkpoint(prefix, tables[0])
    raise KeyError(
        f"No centers table {name or SAVER_DEFAULT + ' or ' + H5_GROUP!r} in checkpoint "
        f"{prefix}; tables found: {tables or 'none'}"
        f"{'; pass name= one of them' if name is None and tables else ''}.")


def _parts_of(key, keys):
    """The checkpoint keys of `key`'s shards, in row order, or []."""
    name, dot, attribute = key.partition("/.")
    for key_of_part0 in keys:
        found = re.fullmatch(re.escape(part_name(name, 0, "")) + r"(\d+)" + re.escape(dot + attribute),
                             key_of_part0)
        if found:
            count = int(found.group(1))
            return [part_name(name, k, count) + dot + attribute for k in range(count)]
    return []


def _damaged_checkpoint_guard(prefix, read, argument):
    """`read(argument)`; a truncated or missing file becomes an OSError saying so
    (TensorFlow raises a bare IndexError, or an OpError with no message)."""
    import tensorflow as tf
    try:
        return read(argument)
    except (IndexError, tf.errors.OpError) as error:
        files = {os.path.basename(file): os.path.getsize(file)
                 for file in sorted(glob.glob(glob.escape(prefix) + ".*"))}
        raise OSError(
            f"Checkpoint {prefix} cannot be read ({type(error).__name__}: "
            f"{error.message if isinstance(error, tf.errors.OpError) else error}): a file "
            f"is truncated or missing. Files found, in bytes: {files}. Copy the "
            f"checkpoint again, or read an earlier one.") from error
