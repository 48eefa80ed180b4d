"""Which Keras model is compiling this loss? A registry filled from above.

A front-end that compiles models (Keras 2) registers a finder: a function
that returns its site object for the loss or metric being built, or None.
`cl.ops` asks `current()`; it never imports a front-end.

Finding a site walks the Python stack, so a loss finds it once per build:
the caller that found it (a Keras 2 loss class, `softmax_center_loss`)
runs the rest of the build inside `scope(site)`, and every `current()`
there answers from that scope (None included) without searching again.
Pure Python: no TensorFlow is loaded here.
"""

import contextlib
import threading

_FINDERS = []
# Per thread: Keras 2 builds each replica's clone in a thread of its own.
_SCOPES = threading.local()


def register(finder):
    """Adds `finder` (a function returning a site or None), once."""
    if finder not in _FINDERS:
        _FINDERS.append(finder)


def current():
    """The site of the loss being built: the innermost `scope`'s, else the
    first registered finder's answer, else None (raw TF1 code)."""
    stack = getattr(_SCOPES, "stack", None)
    if stack:
        return stack[-1]
    for finder in _FINDERS:
        site = finder()
        if site is not None:
            return site
    return None


@contextlib.contextmanager
def scope(site):
    """Within the block, `current()` answers `site` (which may be None)."""
    stack = _SCOPES.__dict__.setdefault("stack", [])
    stack.append(site)
    try:
        yield site
    finally:
        stack.pop()
