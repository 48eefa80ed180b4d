"""The built sdist and wheel (`make dist-check`, issue 23 item 4): the
LICENSE inside both, the docs inside the sdist, the metadata a package
index shows, `twine check`, and the wheel installed with its `[tf]` extra
into a fresh virtual environment (the versions of requirements/tf2.21.txt
as constraints) where `python -m cl`, run outside the checkout, passes.

Reads the distributions from $CL_DIST (the Makefile builds them there);
without it, builds them into a temporary folder.
"""

import os
import pathlib
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FRONT_ENDS = ("graph", "keras2", "keras3", "tf2")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if os.environ.get("CL_DIST"):
        return pathlib.Path(os.environ["CL_DIST"]).resolve()
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return out


def only(folder, pattern):
    (found,) = folder.glob(pattern)
    return found


def wheel_files(dist):
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        return {name: wheel.read(name) for name in wheel.namelist()}


def sdist_files(dist):
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        return {member.name.split("/", 1)[1]: sdist.extractfile(member).read()
                for member in sdist.getmembers() if member.isfile()}


def test_license_is_in_the_wheel_and_the_sdist(dist):
    license_text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    in_wheel = [data for name, data in wheel_files(dist).items()
                if ".dist-info/" in name and name.rsplit("/", 1)[-1] == "LICENSE"]
    assert in_wheel == [license_text]
    assert sdist_files(dist)["LICENSE"] == license_text


def test_sdist_carries_the_docs_changelog_and_citation(dist):
    files = sdist_files(dist)
    for page in sorted((ROOT / "docs").iterdir()):
        assert files[f"docs/{page.name}"] == page.read_bytes()
    for name in ("README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "setup.py"):
        assert files[name] == (ROOT / name).read_bytes()


def test_metadata_a_package_index_shows(dist):
    (metadata,) = [data.decode() for name, data in wheel_files(dist).items()
                   if name.endswith(".dist-info/METADATA")]
    headers, _, description = metadata.partition("\n\n")
    field = lambda name: re.findall(rf"^{name}: (.*)$", headers, re.M)  # noqa: E731
    assert field("Author") and field("Keywords") and field("License") == ["Apache-2.0"]
    for stack in ("Keras 3", "TensorFlow", "JAX", "PyTorch", "TF2", "Keras 2", "TF1"):
        assert stack in field("Summary")[0]
    assert set(field("Provides-Extra")) == {"tf", "cpu", "jax", "torch", "examples"}
    # read_centers needs h5py on every stack: a base requirement, no extra.
    assert any(r.startswith("h5py") and "extra" not in r for r in field("Requires-Dist"))
    assert "tensorflow-cpu<2.16,>=2.15; extra == \"cpu\"" in field("Requires-Dist")
    assert field("Project-URL") == ["Paper, https://doi.org/10.1007/978-3-319-46478-7_31"]
    # The page itself: no link or image that a package index cannot resolve.
    assert "python -m cl" in description
    assert not re.findall(r"\]\((?![a-z]+:)[^)]*\)", description)


def test_twine_check_passes(dist):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                             str(only(dist, "*.whl")), str(only(dist, "*.tar.gz"))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_python_m_cl_passes(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    wheel = only(dist, "*.whl")
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         f"{wheel}[tf]", "-c", str(ROOT / "requirements" / "tf2.21.txt")],
        capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # From an empty folder, so that `import cl` cannot find the checkout.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    selftest = subprocess.run([str(venv / "bin" / "python"), "-m", "cl"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600,
                              env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"))
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr[-3000:]
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cl; print(cl.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert str(venv) in where.stdout, where.stdout + where.stderr
    lines = selftest.stdout.splitlines()
    for name in FRONT_ENDS:
        assert f"  {name}: checked, all passed" in lines, selftest.stdout
    assert lines[-1] == "PASS"
