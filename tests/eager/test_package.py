"""`import cl` stays free of TensorFlow; the lazy names resolve where they did;
docs/api.md names every public name."""

import ast
import pathlib
import re

import pytest
from helpers import run_python


def test_import_cl_imports_no_tensorflow():
    result = run_python(
        "import sys, cl\n"
        "assert cl.NUM_CLASSES == 240 and cl.ALPHA == 0.6 and cl.LAMBDA == 0.0005\n"
        "cl.NUM_CLASSES = 10\n"
        "from cl import formulas, checkpoints\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_keras3_imports_without_tensorflow_on_jax():
    pytest.importorskip("jax")
    result = run_python(
        "import sys, cl\n"
        "layer = cl.keras3.CenterLoss(3)\n"
        "print('tensorflow' in sys.modules, type(layer).__module__)\n",
        env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "cl.keras3.layer"]


def test_lazy_names_come_from_their_modules():
    pytest.importorskip("tensorflow")
    import cl
    from cl import checkpoints, formulas, ops, tf2
    assert cl.center_loss is ops.center_loss and cl.get_centers is ops.get_centers
    assert cl.center_update is formulas.center_update
    assert cl.read_centers is checkpoints.read_centers and cl.tf2 is tf2
    assert set(cl._KERAS_NAMES) <= set(cl.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cl.nope  # noqa: B018


def test_h5py_is_installed_with_cl():
    """Issue 21 item 10: read_centers on a .keras or .h5 file needs h5py,
    which the [tf] extra brought only through TensorFlow."""
    import ast
    import pathlib
    setup = pathlib.Path(__file__).resolve().parents[2] / "setup.py"
    call = next(node for node in ast.walk(ast.parse(setup.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    requires, = [ast.literal_eval(k.value) for k in call.keywords if k.arg == "install_requires"]
    assert any(r.split(">")[0].split("=")[0].strip() == "h5py" for r in requires), requires


def test_api_reference_names_every_public_name():
    """Issue 23 item 2: docs/api.md lists every name of `cl.__all__` (import
    cl loads no framework), `cl.keras3.__all__` (read from the source: no
    Keras 3 needed) and cl.tf2's CenterLoss, each as a table row of its own."""
    import cl
    root = pathlib.Path(__file__).resolve().parents[2]

    def public(module):
        tree = ast.parse((root / module).read_text())
        (names,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets)]
        return ast.literal_eval(names)

    page = (root / "docs" / "api.md").read_text()
    rows = set(re.findall(r"^\| `(?:[A-Za-z0-9_]+\.)*([A-Za-z_][A-Za-z0-9_]*)", page, re.M))
    # The first row of the settings names NUM_CLASSES, ALPHA, LAMBDA, UPDATE_ON together.
    rows |= set(re.findall(r"`([A-Z_]+) = ", page))
    expected = set(cl.__all__) | set(public("cl/keras3/__init__.py")) | {"CenterLoss"}
    assert "class CenterLoss" in (root / "cl" / "tf2.py").read_text()
    missing = sorted(expected - rows - {"__version__"})
    assert not missing, f"docs/api.md has no row for {missing}"
