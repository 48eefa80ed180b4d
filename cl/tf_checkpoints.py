"""TensorFlow checkpoints: the names cl's tables take in them, and reading
them whatever the prefix.

The names: a graph table is the variable `<scope>/center_loss/centers`
(`tf.compat.v1.train.Saver` keys it so); a Keras 2 model tracks its tables
as `cl_centers`, `cl_centers_1`, ... (`cl_centers_part_0_of_3`, ... for a
table split by rows), so TF-format `save_weights` and `tf.train.Checkpoint`
key them `cl_centers/.ATTRIBUTES/VARIABLE_VALUE`.

Reading: TensorFlow's checkpoint reader treats `[ ] * ?` in a prefix as
glob patterns (a folder `run[1]` is "not found", and `latest_checkpoint`
returns None for it); `checkpoint_prefix` and `checkpoint_reader` do not.
A damaged or truncated checkpoint raises OSError naming its files.
`cl.checkpoints.read_centers` is the public entry for every format.
"""

import contextlib
import glob
import os
import re
import tempfile

import numpy as np

CENTERS_NAME = "centers"
DEFAULT_SCOPE = "center_loss"
SAVER_DEFAULT = f"{DEFAULT_SCOPE}/{CENTERS_NAME}"
KERAS2_NAME = "cl_centers"  # also cl's HDF5 group: one name in both formats
KERAS_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"
_GLOB_CHARACTERS = re.compile(r"[][*?]")


def tracking_name(index):
    """Name of a Keras 2 model's index-th table in its checkpoints."""
    return KERAS2_NAME if index == 0 else f"{KERAS2_NAME}_{index}"


def part_name(name, index, count):
    """The checkpoint name of shard `index` of `count` of a table split by
    rows that a Keras 2 model tracks as `name` (`cl_centers_part_0_of_4`).
    The count is in the name: a checkpoint of 4 shards never matches a model
    of 3 by key (TF would assign a shard of another size as it is)."""
    return f"{name}_part_{index}_of_{count}"


def checkpoint_prefix(path):
    """The TF checkpoint prefix `path` names: itself if `path.index` exists,
    else a folder's latest checkpoint (its `checkpoint` file); else None.
    Unlike tf.train.latest_checkpoint, a folder named with [ ] * ? works."""
    import tensorflow as tf
    path = os.fspath(path)
    if tf.io.gfile.exists(path + ".index"):
        return path
    state = tf.io.gfile.isdir(path) and tf.train.get_checkpoint_state(path)
    latest = state.model_checkpoint_path if state else None
    return latest if latest and tf.io.gfile.exists(latest + ".index") else None


@contextlib.contextmanager
def checkpoint_reader(prefix):
    """`tf.train.load_checkpoint(prefix)`, also for a prefix with `[ ] * ?`:
    TensorFlow globs the prefix, so its files are then read through links
    under a plain temporary prefix, kept while the block reads."""
    import tensorflow as tf
    if not (_GLOB_CHARACTERS.search(prefix) and os.path.isfile(prefix + ".index")):
        yield _damaged_checkpoint_guard(prefix, tf.train.load_checkpoint, prefix)
        return
    with tempfile.TemporaryDirectory(prefix="cl_checkpoint_") as folder:
        plain = os.path.join(folder, "ckpt")
        try:
            for file in glob.glob(glob.escape(prefix) + ".*"):
                os.symlink(os.path.abspath(file), plain + file[len(prefix):])
        except OSError as error:
            raise OSError(f"Checkpoint {prefix}: TensorFlow reads [ ] * ? in a prefix as "
                          f"glob patterns, and linking its files under a plain name failed "
                          f"({error}); copy or rename it without them.") from error
        yield _damaged_checkpoint_guard(prefix, tf.train.load_checkpoint, plain)


def stored_shape(shapes, name):
    """The whole shape of table `name` (a tf_keras key such as `cl_centers`, or
    a variable name) in a checkpoint's shape map, from its one key or the sum
    of its shards' rows; None if it is not there. Reads no values."""
    for key in (name, name + KERAS_ATTRIBUTE):
        if key in shapes:
            return list(shapes[key])
        parts = _parts_of(key, shapes)
        if parts and all(part in shapes for part in parts):
            return [sum(shapes[part][0] for part in parts), *shapes[parts[0]][1:]]
    return None


def read_table(path, name=None):
    """`read_centers` for a TF checkpoint (prefix or folder); see there."""
    prefix = checkpoint_prefix(path)
    if prefix is None:
        raise FileNotFoundError(f"No checkpoint at {path!r} (no {path}.index, and not a "
                                f"folder with a 'checkpoint' file, nor an HDF5 or "
                                f".keras file).")
    with checkpoint_reader(prefix) as reader:
        return _read_table(reader, prefix, name)


def _read_table(reader, prefix, name):
    keys = reader.get_variable_to_shape_map()
    if name is None:
        candidates = [SAVER_DEFAULT, KERAS2_NAME + KERAS_ATTRIBUTE]
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
                         rf"(^|/)({CENTERS_NAME}|{KERAS2_NAME}(_\d+)?(_part_0_of_\d+)?)"
                         rf"({re.escape(KERAS_ATTRIBUTE)})?$", key)})
    if name is None and len(tables) == 1:
        # Not at a default name, but the only table there is (a tf.train.Checkpoint
        # of a cl.tf2.CenterLoss: `<attribute>/centers`).
        return _read_table(reader, prefix, tables[0])
    raise KeyError(
        f"No centers table {name or SAVER_DEFAULT + ' or ' + KERAS2_NAME!r} in checkpoint "
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
