"""Shared by every suite; imports no framework.

`tests/graph_mode/` runs with eager execution disabled (TF1-style graph
mode, see its conftest); `tests/eager/` (TF2, Keras 3 on any backend) needs
it on, so each runs in its own pytest process: graph mode is a process-wide
switch. `pytest.ini` puts this folder, `tests/support/`, on sys.path; the
programs of `tests/scripts/` put it there themselves (their first argument).
"""

import json
import os
import socket
import subprocess
import sys

try:
    import fcntl
except ImportError:  # not POSIX: each pytest process runs the program itself
    fcntl = None

SUPPORT = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(SUPPORT)
ROOT = os.path.dirname(TESTS)


def run_python(code, *args, env=None, timeout=300):
    """Runs `python -c code` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def run_checked(*args, timeout=300):
    """Runs `python *args` from the repository root; asserts it exits 0;
    returns CompletedProcess."""
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def script(name):
    """The source of tests/scripts/<name>.py (run it with `run_python`, from
    the repo root, so that it imports the checkout under test; give it
    SUPPORT, which it puts on sys.path)."""
    with open(os.path.join(TESTS, "scripts", f"{name}.py")) as file:
        return file.read()


def result_of(stdout, stderr):
    """The JSON of a script's last `RESULT ` line."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; stdout tail:\n{stdout[-2000:]}\nstderr tail:\n{stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def once_per_run(tmp_path_factory, name, produce):
    """`produce()`'s JSON result, computed once for the whole pytest run:
    pytest-xdist's workers share it through a file (a module-scoped fixture
    would rerun a subprocess program in each worker, and again whenever a
    worker's queue leaves the module and comes back). `produce` gets a
    folder of its own to write files into."""
    shared = tmp_path_factory.getbasetemp().parent  # the same for every worker
    folder, saved = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not saved.exists():
            folder.mkdir(exist_ok=True)
            saved.write_text(json.dumps(produce(folder)))
        return json.loads(saved.read_text())


def script_result_once(tmp_path_factory, name, *args, timeout=300):
    """The RESULT JSON of tests/scripts/<name>.py (run with SUPPORT and
    `args`), run once per pytest run (`once_per_run`)."""
    def produce(_):
        done = run_python(script(name), SUPPORT, *args, timeout=timeout)
        return result_of(done.stdout, done.stderr)
    return once_per_run(tmp_path_factory, name, produce)


def free_ports(count):
    """`count` free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(source, timeout=180):
    """Runs `source` as 2 worker processes on 127.0.0.1 (argv: task index,
    the ports, the tests/support folder), each killed after `timeout`
    seconds; returns their RESULT dicts."""
    ports = ",".join(map(str, free_ports(2)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [subprocess.Popen([sys.executable, "-c", source, str(task), ports, SUPPORT],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for task in range(2)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=timeout))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return [result_of(*output) for output in outputs]


TORCH_COMPILED_LAYER = (
    "torch.compile (jit_compile=True on PyTorch) hides fit's sample weights from the "
    "plain CenterLoss layer, so cl refuses it there (tested by "
    "test_keras3_torch_table.py::test_torch_compile_refuses_the_plain_layer)")


def skip_torch_compiled_layer(backend, jit):
    """Skips a plain-layer test case that fits with jit_compile=True on torch."""
    import pytest
    if backend == "torch" and jit:
        pytest.skip(TORCH_COMPILED_LAYER)


def fresh_torch_compile():
    """Forgets what torch.compile traced so far in this process. Keras's
    torch steps share one code object, and after 8 recompiles of it dynamo
    runs it eagerly for good: a test of compiled behaviour would then test
    eager, depending on the tests before it."""
    import torch
    torch._dynamo.reset()
