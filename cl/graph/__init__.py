"""The TF1 graph primitives, one concern each, arguments in and tensors out.

`checks` (the label, feature and weight rules), `ties` (what makes a session
run apply the update), `replicas` (the update across tf.distribute
replicas), `table` (the centers table: create or reuse, initialised check,
guarded update), `sites` (a registry: which Keras model is compiling this
loss, filled from above). They import `cl.formulas` and `cl.compat` and each
other downward, never a front-end. Importing this package loads nothing.
"""
