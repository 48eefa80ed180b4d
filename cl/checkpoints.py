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
HDF5 and Keras 3 files need only h5py (a dependency of cl); the TensorFlow
formats need TensorFlow (`cl.tf_checkpoints`: any prefix, `[ ] * ?` too).
A damaged or truncated file raises OSError naming it.
"""

import os
import re
import zipfile

import numpy as np

from cl import tf_checkpoints

# The names the HDF5 writers use, so that read_centers finds what they wrote
# (the TF checkpoints' names: cl.tf_checkpoints).
H5_GROUP = tf_checkpoints.KERAS2_NAME
KERAS3_WEIGHTS = "model.weights.h5"
_KERAS3_LAYER_KEY = re.compile(r"center_loss(_\d+)?$")
_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")
_ZIP_MAGIC = b"PK\x03\x04"


def h5py_module():
    """h5py, or an ImportError that says how to install it."""
    try:
        import h5py
    except ImportError as error:
        raise ImportError("cl reads and writes HDF5 and Keras 3 .keras files with h5py, "
                          "which is not installed: pip install h5py") from error
    return h5py


def read_h5_centers(h5):
    """The centers arrays in cl's HDF5 group (a path or an open h5py group),
    in table order; [] if there is none."""
    h5py = h5py_module()
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
      OSError naming the file when a file cannot be read (damaged, truncated,
        missing a checkpoint's data file).
      ImportError when an HDF5 or .keras file needs h5py and it is missing.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, KERAS3_WEIGHTS)):
        return _read_h5(os.path.join(path, KERAS3_WEIGHTS), name, path)  # unzipped .keras
    magic = _magic(path)
    if magic.startswith(_ZIP_MAGIC):
        return _read_keras_file(path, name)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_h5(path, name, path)
    prefix = _CHECKPOINT_FILE.sub("", path)
    if os.path.isfile(path) and not os.path.isfile(prefix + ".index"):
        raise OSError(f"{path} cannot be read: it is not a Keras 3 .keras (zip) file, an "
                      f"HDF5 file, nor a TensorFlow checkpoint's .index or .data file; "
                      f"damaged or truncated, or of another format.")
    return tf_checkpoints.read_table(prefix, name)


def _magic(path):
    """The first 8 bytes of a file (b"" for anything else)."""
    if not os.path.isfile(path):
        return b""
    with open(path, "rb") as file:
        return file.read(8)


def _damaged_file_guard(path, read, *arguments):
    """`read(*arguments)`; a damaged or truncated file becomes an OSError
    naming it (zipfile and h5py raise errors that name neither)."""
    import zlib
    try:
        return read(*arguments)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as error:
        raise OSError(f"{path} cannot be read ({type(error).__name__}: {error}): the "
                      f"file is damaged or truncated. Copy it again, or read an "
                      f"earlier one.") from error


def _read_keras_file(path, name):
    with _damaged_file_guard(path, zipfile.ZipFile, path) as archive:
        if KERAS3_WEIGHTS not in archive.namelist():
            raise KeyError(f"{path} is a zip file but not a Keras 3 .keras file with "
                           f"weights: no {KERAS3_WEIGHTS} among {archive.namelist()}.")
        # h5py reads only what it needs: read the weights through once first,
        # so that zipfile checks their CRC (damage inside the data otherwise
        # goes unnoticed in a stored, uncompressed member).
        _damaged_file_guard(path, _read_through, archive, KERAS3_WEIGHTS)
        with archive.open(KERAS3_WEIGHTS) as weights:
            return _read_h5(weights, name, f"{path} ({KERAS3_WEIGHTS})")


def _read_through(archive, member):
    with archive.open(member) as stream:
        while stream.read(1 << 24):
            pass


def _read_h5(source, name, path):
    h5py = h5py_module()
    return _damaged_file_guard(path, _read_h5_tables, h5py, source, name, path)


def _read_h5_tables(h5py, source, name, path):
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


