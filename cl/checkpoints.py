"""`read_centers`: the centers in any file the graph-mode module writes.

For migrating a TF1 / Keras 2 codebase: read its trained table as numpy,
then assign it to the new one (`cl.tf2.CenterLoss(...).centers.assign(a)`,
`cl.keras3.CenterLoss` layer `.centers.assign(a)`; both refuse another
shape). `tf.train.Checkpoint` cannot do this: it silently ignores the
name-based checkpoints a `tf.compat.v1.train.Saver` writes.

Formats, and the table read when `name` is None:
  * `tf.compat.v1.train.Saver` checkpoint (prefix or folder): `center_loss/centers`.
  * tf_keras TF-format checkpoint (`model.save_weights("ckpt")`): `cl_centers`.
  * HDF5 from `cl.save_model` / `save_weights("m.h5")`: group `cl_centers`,
    dataset "0" (each dataset's attribute "name" holds the variable name).
HDF5 needs only h5py; the TensorFlow formats need TensorFlow.
"""

import os

import numpy as np

H5_GROUP = "cl_centers"
SAVER_DEFAULT = "center_loss/centers"
KERAS_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"


def read_centers(path, name=None):
    """The centers table `name` stored in `path`, as a numpy array.

    Args:
      path: a checkpoint prefix or folder (Saver, tf_keras TF format), or an
        `.h5` file.
      name: the table: a Saver variable name (`center_loss/centers`, `:0`
        optional), a tf_keras key (`cl_centers`, `cl_centers_1`, or the full
        `cl_centers/.ATTRIBUTES/VARIABLE_VALUE`), or for HDF5 the dataset
        index ("0") or the stored variable name. None: see the module doc.

    Raises:
      KeyError naming the tables found, when `name` is not among them.
      FileNotFoundError when `path` holds no checkpoint.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and _is_hdf5(path):
        return _read_h5(path, name)
    return _read_tf_checkpoint(path, name)


def _is_hdf5(path):
    with open(path, "rb") as file:
        return file.read(8) == b"\x89HDF\r\n\x1a\n"


def _read_h5(path, name):
    import h5py
    with h5py.File(path, "r") as f:
        if H5_GROUP not in f:
            raise KeyError(f"{path} holds no cl centers (no HDF5 group '{H5_GROUP}'): "
                           f"it was not written by cl.save_model or a cl-compiled "
                           f"model's save_weights.")
        group = f[H5_GROUP]
        stored = {index: _text(group[index].attrs.get("name", "")) for index in group}
        wanted = "0" if name is None else str(name)
        for index, variable in stored.items():
            if wanted in (index, variable, variable.split(":")[0]):
                return np.asarray(group[index])
        found = [f"{index} ({variable})" for index, variable in sorted(stored.items())]
        raise KeyError(f"No centers table {wanted!r} in {path}; tables found: {found}.")


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_tf_checkpoint(path, name):
    import tensorflow as tf
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(f"No checkpoint at {path!r} (no {path}.index, and not a "
                                f"folder with a 'checkpoint' file, nor an HDF5 file).")
    reader = tf.train.load_checkpoint(prefix)
    keys = reader.get_variable_to_shape_map()
    if name is None:
        candidates = [SAVER_DEFAULT, H5_GROUP + KERAS_ATTRIBUTE]
    else:
        name = str(name).split(":")[0]
        candidates = [name, name + KERAS_ATTRIBUTE]
    for key in candidates:
        if key in keys:
            return reader.get_tensor(key)
    tables = sorted(key.replace(KERAS_ATTRIBUTE, "") for key in keys
                    if key.split("/")[-1] == "centers" or key.startswith(H5_GROUP))
    raise KeyError(
        f"No centers table {name or SAVER_DEFAULT + ' or ' + H5_GROUP!r} in checkpoint "
        f"{prefix}; tables found: {tables or 'none'}.")
