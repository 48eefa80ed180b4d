"""The blog's package settings, read when a loss is built.

`cl.NUM_CLASSES = 10` (the blog's style) sets them: `cl` forwards its
attributes of these names here. Every op that takes the setting as an
argument reads the value here only when the argument is None.
"""

NUM_CLASSES = 240
ALPHA = 0.6
LAMBDA = 0.0005
# What makes a session run apply the center update (see cl.graph.ties):
# "loss", the blog's (running the loss or its gradient), or "gradient"
# (only a run that computes the gradient: Estimator, hooks, summary runs).
UPDATE_ON = "loss"

NAMES = ("NUM_CLASSES", "ALPHA", "LAMBDA", "UPDATE_ON")


def value_or_default(value, name):
    """`value`, or the package setting `name` (`cl.ALPHA`...) at call time."""
    return globals()[name] if value is None else value
