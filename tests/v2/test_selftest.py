"""`python -m cl` checks every front-end the environment runs and says why it
skipped the others: TF 2.21 + Keras 3 (all three checked), TF 2.15 (Keras 2:
keras3 skipped), Keras 3 on JAX without TensorFlow (graph and tf2 skipped).
A wrong result or a crash exits non-zero, and so does checking nothing."""

import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys

import pytest

import cl.__main__ as selftest_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
HAS_TF = importlib.util.find_spec("tensorflow") is not None
try:
    KERAS = importlib.metadata.version("keras")
except importlib.metadata.PackageNotFoundError:
    KERAS = None


def run_selftest(code="import sys, cl.__main__ as m; sys.exit(m.main())"):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def expected_statuses():
    keras3 = ("skipped (Keras not installed)" if KERAS is None else
              f"skipped (Keras {KERAS} is not Keras 3)" if int(KERAS.split(".")[0]) < 3 else
              "checked, all passed")
    tf = "checked, all passed" if HAS_TF else "skipped (TensorFlow not installed)"
    return {"graph": tf, "keras3": keras3, "tf2": tf}


def statuses(stdout):
    lines = stdout.splitlines()
    block = lines[lines.index("front-ends:") + 1:]
    return dict(line.strip().split(": ", 1) for line in block if line.startswith("  "))


def test_python_m_cl_checks_what_this_environment_runs():
    result = subprocess.run([sys.executable, "-m", "cl"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "PASS"
    assert statuses(result.stdout) == expected_statuses()
    assert "FAIL" not in result.stdout.replace("PASS", "")
    if expected_statuses()["keras3"].startswith("checked"):
        import keras
        assert f"{keras.backend.backend()} backend" in result.stdout
        for name in ("CenterLoss layer", "CenterLossModel"):
            assert f"ok   {name}: evaluate and predict move nothing" in result.stdout


def test_a_wrong_rule_fails_every_checked_front_end():
    result = run_selftest(
        "import sys\n"
        "import cl.selftest as s\n"
        "right = s.numpy_step\n"
        "s.numpy_step = lambda y, x, c, a: right(y, x, c, 0.9 * a)  # a wrong alpha\n"
        "import cl.__main__ as m\n"
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
