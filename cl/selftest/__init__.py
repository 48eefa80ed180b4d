"""`python -m cl`: the self-test of every front-end this environment runs.

One module per front-end, each checked against the numpy rule of
`reference`: `graph` (the TF1 graph API in a Session, and the plainest
`sess.run(train_op)` loop), `keras2` (the blog's `model.compile(loss=cl.loss)`
and fit), `keras3` (the layer and `CenterLossModel` on the installed
backend) and `tf2` (a `tf.function` step). The graph-mode checks keep to
their own `tf.Graph` contexts, so the eager ones after them run in the same
process. A front-end the environment cannot run is skipped, with the reason.
Prints a short report; exits non-zero on any failure, or when nothing was
checked.
"""

import sys

import numpy as np

import cl
from cl.selftest import graph, keras2, keras3, tf2

# In this order: graph and Keras 2 first, in graphs of their own.
FRONT_ENDS = (("graph", graph.why_not_graph, graph.check_graph),
              ("keras2", keras2.why_not_keras2, keras2.check_keras2),
              ("keras3", keras3.why_not_keras3, keras3.check_keras3),
              ("tf2", tf2.why_not_tf2, tf2.check_tf2))


def run_front_end(name, why_not, check, rng):
    """`(status, passed)`, printing the front-end's checks; passed is None
    when it was skipped."""
    reason = why_not()
    if reason is not None:
        return f"skipped ({reason})", None
    try:
        header, checks = check(rng)
    except Exception as error:  # a crash is a failed check, reported as one
        header, checks = f"{name}:", [(f"raised {type(error).__name__}: {error}", False)]
    print(header)
    for description, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {description}")
    passed = all(ok for _, ok in checks)
    failed = sum(not ok for _, ok in checks)
    return ("checked, all passed" if passed else f"checked, {failed} FAILED"), passed


def main(front_ends=FRONT_ENDS):
    rng = np.random.default_rng(2016)
    print(f"cl {cl.__version__} self-test (Python {sys.version.split()[0]})")
    results = []
    for name, why_not, check in front_ends:
        status, passed = run_front_end(name, why_not, check, rng)
        results.append((name, status, passed))
    print("front-ends:")
    for name, status, _ in results:
        print(f"  {name}: {status}")
    checked = [passed for _, _, passed in results if passed is not None]
    if not checked:
        print("  nothing could be checked here: install TensorFlow, or Keras 3 "
              "with a backend cl.keras3 supports (KERAS_BACKEND)")
    passed = bool(checked) and all(checked)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1
