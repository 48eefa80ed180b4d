"""`python -m cl` checks every front-end the environment runs and says why it
skipped the others: TF 2.21 + tf_keras + Keras 3 (all four checked), TF 2.15
(Keras 2 built in: keras3 skipped), Keras 3 on JAX or PyTorch without
TensorFlow (graph, keras2 and tf2 skipped). A wrong result or a crash exits
non-zero, and so does checking nothing."""

import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys

import pytest

import cl.selftest as selftest_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
HAS_TF = importlib.util.find_spec("tensorflow") is not None
try:
    KERAS = importlib.metadata.version("keras")
except importlib.metadata.PackageNotFoundError:
    KERAS = None


def run_selftest(code="import sys, cl.selftest as m; sys.exit(m.main())"):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def keras2_importable():
    """Keras 2 as cl finds it: tf.keras on TF 2.15, tf_keras from 2.16."""
    if not HAS_TF:
        return False
    import tensorflow as tf
    if tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16):
        return True
    return importlib.util.find_spec("tf_keras") is not None


def expected_statuses():
    keras3 = ("skipped (Keras not installed)" if KERAS is None else
              f"skipped (Keras {KERAS} is not Keras 3)" if int(KERAS.split(".")[0]) < 3 else
              "checked, all passed")
    tf = "checked, all passed" if HAS_TF else "skipped (TensorFlow not installed)"
    keras2 = tf if not HAS_TF or keras2_importable() else "skipped (Keras 2 not installed: "
    return {"graph": tf, "keras2": keras2, "keras3": keras3, "tf2": tf}


def statuses(stdout):
    lines = stdout.splitlines()
    block = lines[lines.index("front-ends:") + 1:]
    return dict(line.strip().split(": ", 1) for line in block if line.startswith("  "))


def test_python_m_cl_checks_what_this_environment_runs():
    result = subprocess.run([sys.executable, "-m", "cl"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "PASS"
    got, want = statuses(result.stdout), expected_statuses()
    assert list(got) == list(want)  # in this order: graph, keras2, keras3, tf2
    assert all(got[name].startswith(status) for name, status in want.items()), got
    assert "FAIL" not in result.stdout.replace("PASS", "")
    if expected_statuses()["keras3"].startswith("checked"):
        import keras
        assert f"{keras.backend.backend()} backend" in result.stdout
        for name in ("CenterLoss layer", "CenterLossModel"):
            assert f"ok   {name}: evaluate and predict move nothing" in result.stdout


def test_a_wrong_rule_fails_every_checked_front_end():
    result = run_selftest(
        "import sys\n"
        "import cl.selftest.reference as s\n"
        "right = s.numpy_step\n"
        "s.numpy_step = lambda y, x, c, a: right(y, x, c, 0.9 * a)  # a wrong alpha\n"
        "import cl.selftest as m\n"
        "sys.exit(m.main())\n")
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "FAIL"
    checked = [name for name, status in expected_statuses().items() if status.startswith("checked")]
    assert checked
    got = statuses(result.stdout)
    for name in checked:
        assert "FAILED" in got[name], result.stdout
    assert "  FAIL " in result.stdout


def test_a_crash_is_a_failure(capsys):
    def broken(rng):
        raise RuntimeError("boom")

    front_ends = [("fine", lambda: None, lambda rng: ("fine: header", [("a check", True)])),
                  ("broken", lambda: None, broken)]
    assert selftest_main.main(front_ends) == 1
    out = capsys.readouterr().out
    assert "  FAIL raised RuntimeError: boom" in out and "broken: checked, 1 FAILED" in out
    assert "fine: checked, all passed" in out and out.strip().endswith("FAIL")


@pytest.mark.parametrize("checked", [False, True])
def test_nothing_checked_fails(capsys, checked):
    front_ends = [("absent", lambda: "not installed", None)]
    if checked:
        front_ends.append(("present", lambda: None, lambda rng: ("present: header", [("a check", True)])))
    assert selftest_main.main(front_ends) == (0 if checked else 1)
    out = capsys.readouterr().out
    assert "absent: skipped (not installed)" in out
    assert ("nothing could be checked here" in out) is not checked


def run_front_ends(names, setup=""):
    """`python -m cl` limited to the front-ends `names`, after `setup`."""
    return run_selftest(
        f"import sys\n{setup}\nimport cl.selftest as m\n"
        f"sys.exit(m.main([f for f in m.FRONT_ENDS if f[0] in {names!r}]))\n")


def test_keras2_check_is_the_blogs_route():
    """Issue 23 item 5: a green self-test means the blog's
    `model.compile(loss=cl.loss)` + fit works; where compiling it is
    refused, the Keras 2 check fails."""
    if not keras2_importable():
        pytest.skip("no Keras 2 here")
    result = run_front_ends(["keras2"])
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "keras2: the blog's model.compile(loss=cl.loss) on " in result.stdout
    for check in ("fit (4 steps) and train_on_batch: centers vs numpy",
                  "train_on_batch loss = cross-entropy + LAMBDA * center loss",
                  "evaluate and predict move nothing"):
        assert check in result.stdout
    refused = run_front_ends(["keras2"], setup=(
        "import cl.ops\n"
        "def refused(*args, **kwargs):\n"
        "    raise TypeError('cl.loss refused by Keras')\n"
        "cl.ops.loss = refused\n"))
    assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
    assert statuses(refused.stdout) == {"keras2": "checked, 1 FAILED"}
    assert "FAIL raised TypeError: cl.loss refused by Keras" in refused.stdout


def test_keras2_skipped_with_the_reason_where_it_cannot_be_imported():
    """Issue 23 item 5: TF >= 2.16 without tf_keras: the Keras 2 check says
    why it skipped (and what to install), the others still run."""
    if not keras2_importable():
        pytest.skip("no Keras 2 here to take away")
    import tensorflow as tf
    if tf.__version__.startswith("2.15."):
        pytest.skip("on TF 2.15 Keras 2 is tf.keras itself")
    major, minor = tf.__version__.split(".")[:2]
    result = run_front_ends(["graph", "keras2"], setup="sys.modules['tf_keras'] = None")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    got = statuses(result.stdout)
    assert got["graph"] == "checked, all passed"
    assert got["keras2"].startswith("skipped (Keras 2 not installed: ")
    assert f"pip install 'tf-keras~={major}.{minor}.0'" in got["keras2"]
