"""Which Keras model is compiling this loss? A registry filled from above.

A front-end that compiles models (Keras 2) registers a finder: a function
that returns its site object for the loss or metric being built, or None.
`cl.ops` asks `current()`; it never imports a front-end. Pure Python: no
TensorFlow is loaded here.
"""

_FINDERS = []


def register(finder):
    """Adds `finder` (a function returning a site or None), once."""
    if finder not in _FINDERS:
        _FINDERS.append(finder)


def current():
    """The first registered finder's site for the loss being built, or None
    (raw TF1 code)."""
    for finder in _FINDERS:
        site = finder()
        if site is not None:
            return site
    return None
