"""cl.read_centers on the files the graph-mode module writes.

The files are made by the graph-mode API in a subprocess (graph mode is a
process-wide switch), once per session, with the values each table held.
"""

import pathlib
import shutil

import numpy as np
import pytest
from helpers import once_per_run, run_python

tf = pytest.importorskip("tensorflow")
import cl  # noqa: E402
from cl.tf2 import CenterLoss  # noqa: E402

WRITE_OLD_FILES = r"""
import sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import cl
from cl import compat

out = sys.argv[1]
rng = np.random.default_rng(0)

# A raw TF1 loop with two tables, saved by a Saver.
graph = tf.Graph()
with graph.as_default():
    labels = tf.compat.v1.placeholder(tf.int32, [None])
    features = tf.compat.v1.placeholder(tf.float32, [None, 3])
    first = cl.center_loss(labels, features, alpha=0.5, num_classes=6)
    second = cl.center_loss(labels, 2.0 * features, alpha=0.5, num_classes=6, name="second")
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        for _ in range(3):
            session.run([first, second], {labels: rng.integers(0, 6, 16),
                                          features: rng.normal(size=(16, 3))})
        tf.compat.v1.train.Saver().save(session, out + "/saver/model")
        np.save(out + "/saver.npy", session.run(cl.get_centers()))
        np.save(out + "/saver_second.npy", session.run(cl.get_centers("second")))

# Keras 2 through cl.compile_model: TF-format and HDF5 weights, cl.save_model.
keras = compat.keras_module()
x = keras.Input((4,))
embedding = keras.layers.Dense(3, name="embedding")(x)
logits = keras.layers.Dense(6, name="logits")(embedding)
model = keras.Model(x, [logits, embedding])
center = cl.CenterLoss(num_classes=6)
cl.compile_model(model, "sgd", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                 loss_weights={"logits": 1.0, "embedding": 0.1})
xs, ys = rng.normal(size=(64, 4)), rng.integers(0, 6, 64)
model.fit(xs, {"logits": ys, "embedding": ys}, epochs=2, verbose=0)
model.save_weights(out + "/tf_format/ckpt")
model.save_weights(out + "/weights.h5")
cl.save_model(model, out + "/model.h5")
np.save(out + "/keras.npy", keras.backend.get_value(center.centers))
print("WROTE", center.centers.name)
"""


@pytest.fixture(scope="session")
def old_files(tmp_path_factory):
    def produce(out):
        result = run_python(WRITE_OLD_FILES, str(out))
        assert "WROTE" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
        return str(out)
    return pathlib.Path(once_per_run(tmp_path_factory, "old_tf_files", produce))


def test_saver_checkpoint(old_files):
    expected = np.load(old_files / "saver.npy")
    assert expected.shape == (6, 3) and not np.all(expected == 0)
    for path in (old_files / "saver" / "model", old_files / "saver"):
        assert np.array_equal(cl.read_centers(path), expected)
    assert np.array_equal(cl.read_centers(old_files / "saver" / "model", "center_loss/centers:0"),
                          expected)
    assert np.array_equal(cl.read_centers(old_files / "saver", name="second/centers"),
                          np.load(old_files / "saver_second.npy"))


def test_a_checkpoint_file_path_reads_its_prefix(old_files):
    expected = np.load(old_files / "saver.npy")
    for suffix in (".index", ".data-00000-of-00001"):
        assert np.array_equal(cl.read_centers(f"{old_files}/saver/model{suffix}"), expected)
    path = old_files / "tf_format" / "ckpt.index"
    assert np.array_equal(cl.read_centers(path), np.load(old_files / "keras.npy"))


def test_truncated_or_missing_data_file_says_so(old_files, tmp_path):
    shutil.copytree(old_files / "saver", tmp_path / "saver")
    data = tmp_path / "saver" / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:40])
    with pytest.raises(OSError, match=r"saver/model cannot be read \(IndexError: .*truncated "
                                      r"or missing.*'model.data-00000-of-00001': 40,"):
        cl.read_centers(tmp_path / "saver" / "model")
    data.unlink()
    with pytest.raises(OSError, match=r"cannot be read \(OpError: .*model.data-00000-of-00001; "
                                      r"No such file.*truncated or missing"):
        cl.read_centers(tmp_path / "saver" / "model.index")


@pytest.mark.parametrize("folder", ["run[1]", "run*", "run?", "a]b[c"])
def test_a_prefix_with_glob_characters(old_files, tmp_path, folder):
    """Issue 21 item 10: TensorFlow reads `[ ] * ?` in a prefix as glob
    patterns; a prefix with brackets was "truncated or missing" though its
    files were intact."""
    for source, expected in (("saver", "saver.npy"), ("tf_format", "keras.npy")):
        target = tmp_path / folder / source
        shutil.copytree(old_files / source, target)
        stem = "model" if source == "saver" else "ckpt"
        for path in (target / stem, target, f"{target / stem}.index"):
            assert np.array_equal(cl.read_centers(path), np.load(old_files / expected)), path


def test_a_damaged_index_names_the_checkpoint(old_files, tmp_path):
    """Issue 21 item 10: a damaged checkpoint raises OSError naming it."""
    shutil.copytree(old_files / "saver", tmp_path / "saver")
    index = tmp_path / "saver" / "model.index"
    index.write_bytes(index.read_bytes()[:20])
    with pytest.raises(OSError, match=r"saver/model cannot be read .*truncated or missing"):
        cl.read_centers(tmp_path / "saver" / "model")


@pytest.mark.parametrize("file", ["weights.h5", "model.h5"])
def test_a_truncated_h5_file_names_it(old_files, tmp_path, file):
    """Issue 21 item 10: a truncated HDF5 file raises OSError naming it."""
    data = (old_files / file).read_bytes()
    for size in (len(data) // 2, 100, 4):
        path = tmp_path / f"{size}_{file}"
        path.write_bytes(data[:size])
        with pytest.raises(OSError, match=rf"{path.name} cannot be read.*(damaged|truncated)"):
            cl.read_centers(path)


def test_a_file_of_another_format_names_it(tmp_path):
    """Issue 21 item 10: not 'no checkpoint', but what the file is not."""
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(OSError, match=r"notes.txt cannot be read: it is not a Keras 3 .keras"):
        cl.read_centers(path)


def test_keras_tf_format_checkpoint(old_files):
    expected = np.load(old_files / "keras.npy")
    assert not np.all(expected == 0)
    path = old_files / "tf_format" / "ckpt"
    for name in (None, "cl_centers", "cl_centers/.ATTRIBUTES/VARIABLE_VALUE"):
        assert np.array_equal(cl.read_centers(path, name), expected)


@pytest.mark.parametrize("file", ["weights.h5", "model.h5"])
def test_h5_files(old_files, file):
    expected = np.load(old_files / "keras.npy")
    for name in (None, "0", "center_loss/centers:0", "center_loss/centers"):
        assert np.array_equal(cl.read_centers(old_files / file, name), expected)


def test_missing_name_lists_the_tables_found(old_files):
    with pytest.raises(KeyError, match=r"'nope/centers'.*center_loss/centers.*second/centers"):
        cl.read_centers(old_files / "saver", "nope/centers")
    with pytest.raises(KeyError, match=r"tables found: \['0 \(center_loss/centers:0\)'\]"):
        cl.read_centers(old_files / "model.h5", "1")
    with pytest.raises(KeyError, match=r"tables found: \['cl_centers'\]"):
        cl.read_centers(old_files / "tf_format" / "ckpt", "center_loss/centers")
    with pytest.raises(FileNotFoundError):
        cl.read_centers(old_files / "absent")


def test_migrated_centers_go_into_a_new_table_of_the_same_shape_only(old_files):
    values = cl.read_centers(old_files / "saver")
    center = CenterLoss(6, 3)
    center.centers.assign(values)
    assert np.array_equal(center.centers.numpy(), values)
    with pytest.raises(ValueError):
        CenterLoss(7, 3).centers.assign(values)

