"""cl.read_centers on the files Keras 3 writes (`.keras`, `.weights.h5`),
on whichever backend KERAS_BACKEND names (no TensorFlow needed on JAX)."""

import json

import numpy as np
import pytest
from conftest import keras3_or_skip
from helpers import run_python

keras = keras3_or_skip()
import cl  # noqa: E402
import cl.keras3  # noqa: E402

C = 6


def trained(model, inputs, targets):
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, targets, batch_size=16, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files of a model with two layers (the second named "second") and of a
    CenterLossModel, each with the tables' values after one epoch."""
    out = tmp_path_factory.mktemp("keras3")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, C, 32).astype("int32")
    image, labels = keras.Input((4,)), keras.Input((), dtype="int32")
    first = cl.keras3.CenterLoss(C, name="center_loss")  # named: Keras numbers unnamed layers per process
    second = cl.keras3.CenterLoss(C, name="second")
    hidden = first([keras.layers.Dense(3)(image), labels])
    hidden = second([keras.layers.Dense(2)(hidden), labels])
    two = trained(keras.Model([image, labels], keras.layers.Dense(C)(hidden)), [x, y], y)
    embedding = keras.layers.Dense(3)(image)
    backbone = keras.Model(image, [keras.layers.Dense(C)(embedding), embedding])
    wrapped = trained(cl.keras3.CenterLossModel(backbone, C), x, y)
    for model, stem in ((two, "two"), (wrapped, "wrapped")):
        model.save(out / f"{stem}.keras")
        model.save_weights(out / f"{stem}.weights.h5")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(out / "plain.keras")
    values = {"first": first.centers, "second": second.centers, "wrapped": wrapped.centers}
    return out, {key: keras.ops.convert_to_numpy(value) for key, value in values.items()}


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_the_one_table_of_a_center_loss_model(files, suffix):
    out, expected = files
    assert expected["wrapped"].shape == (C, 3) and not np.all(expected["wrapped"] == 0)
    for name in (None, "center_loss", "center_loss/centers:0"):
        assert np.array_equal(cl.read_centers(out / f"wrapped{suffix}", name), expected["wrapped"])


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_two_tables_by_layer_name_or_group(files, suffix):
    out, expected = files
    path = out / f"two{suffix}"
    assert expected["second"].shape == (C, 2) and not np.all(expected["second"] == 0)
    for name in ("center_loss", "center_loss/centers", "layers/center_loss"):
        assert np.array_equal(cl.read_centers(path, name), expected["first"])
    for name in ("second", "second/centers:0", "layers/center_loss_1"):
        assert np.array_equal(cl.read_centers(path, name), expected["second"])
    found = r"\['layers/center_loss \(center_loss\)', 'layers/center_loss_1 \(second\)'\]"
    with pytest.raises(KeyError, match=rf"holds 2 centers tables; pass name=.*{found}"):
        cl.read_centers(path)
    with pytest.raises(KeyError, match=rf"No centers table 'third' .*tables found: {found}"):
        cl.read_centers(path, "third")


def test_files_without_a_table_say_what_was_looked_for(files, tmp_path):
    out, _ = files
    with pytest.raises(KeyError, match=r"holds no cl centers.*cl\.keras3\.CenterLoss layer"):
        cl.read_centers(out / "plain.keras")
    import zipfile
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "no weights")
    with pytest.raises(KeyError, match=r"not a Keras 3 \.keras file.*\['notes\.txt'\]"):
        cl.read_centers(tmp_path / "other.zip")


@pytest.mark.parametrize("file", ["wrapped.keras", "wrapped.weights.h5"])
def test_a_damaged_or_truncated_file_names_it(files, tmp_path, file):
    """Issue 21 item 10: a corrupted `.keras` raised a bare BadZipFile, a
    truncated one "nor an HDF5 or .keras file"; now OSError naming the file."""
    out, _ = files
    data = (out / file).read_bytes()
    cases = {"truncated": data[:len(data) // 2], "cut_short": data[:6]}
    if file.endswith(".keras"):
        import zipfile
        with zipfile.ZipFile(out / file) as archive:
            member = archive.getinfo("model.weights.h5")
        assert member.header_offset + 100 < len(data) // 2 < member.header_offset + member.compress_size
        for case, offset in (("header", member.header_offset), ("data", len(data) // 2)):
            damaged = bytearray(data)
            damaged[offset:offset + 8] = b"\xff" * 8  # a local header, or the weights' bytes
            cases[f"corrupted_{case}"] = bytes(damaged)
    for case, content in cases.items():
        path = tmp_path / f"{case}_{file}"
        path.write_bytes(content)
        with pytest.raises(OSError, match=rf"{path.name} .*cannot be read"):
            cl.read_centers(path)


def test_without_h5py_the_error_says_how_to_install_it(files, monkeypatch):
    """Issue 21 item 10: h5py is a dependency now; missing anyway, the error
    says what to install."""
    import sys
    out, _ = files
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install h5py"):
        cl.read_centers(out / "wrapped.keras")


def test_read_values_go_into_a_new_layer(files):
    out, expected = files
    values = cl.read_centers(out / "two.keras", "second")
    layer = cl.keras3.CenterLoss(C)
    layer.build((None, 2))
    layer.centers.assign(values)
    assert np.array_equal(keras.ops.convert_to_numpy(layer.centers), expected["second"])


TO_TF1 = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import cl

values = cl.read_centers(sys.argv[1])
labels = tf.compat.v1.placeholder(tf.int32, [None])
features = tf.compat.v1.placeholder(tf.float32, [None, values.shape[1]])
loss = cl.center_loss(labels, features, alpha=0.5, num_classes=values.shape[0], training=False)
with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    session.run(cl.get_centers().assign(values))
    y, x = np.arange(values.shape[0]), np.zeros(values.shape, "float32")
    print("TF1", json.dumps(session.run(loss, {labels: y, features: x}).tolist()))
"""


def test_a_keras3_table_goes_into_tf1_code(files):
    pytest.importorskip("tensorflow")
    out, expected = files
    result = run_python(TO_TF1, str(out / "wrapped.keras"))
    line = [row for row in result.stdout.splitlines() if row.startswith("TF1 ")]
    assert line, result.stdout[-2000:] + result.stderr[-3000:]
    # Features at 0: each class's loss is 1/2 ||c_j||^2 of the Keras 3 table.
    np.testing.assert_allclose(json.loads(line[0][4:]), 0.5 * np.sum(expected["wrapped"] ** 2, axis=1),
                               rtol=1e-6)


FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "keras3"


@pytest.mark.parametrize("saved_on", ["tensorflow", "jax", "torch"])
@pytest.mark.parametrize("kind", ["layer", "model"])
def test_files_saved_by_cl_0_1_0_still_load(kind, saved_on):
    """`.keras` files written before cl.keras3 became a package (issue 22),
    on each backend (tests/fixtures/keras3/make.py), load on this backend
    with their centers, and predict."""
    path = FIXTURES / f"{kind}_{saved_on}.keras"
    expected = np.load(FIXTURES / f"{kind}_{saved_on}_centers.npy")
    # A torch optimizer's config names a torch module: across backends, no compile.
    model = keras.saving.load_model(path, compile=saved_on == keras.backend.backend())
    layer = model.center_loss if kind == "model" else model.get_layer("center")
    assert type(layer) is cl.keras3.CenterLoss
    if kind == "model":
        assert type(model) is cl.keras3.CenterLossModel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.centers), expected)
    np.testing.assert_array_equal(cl.read_centers(path), expected)
    x = np.zeros((2, 3), "float32")
    out = model.predict(x if kind == "model" else [x, np.zeros(2, "int32")], verbose=0)
    assert (out[0] if kind == "model" else out).shape == (2, 5)
