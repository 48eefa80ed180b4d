"""The old home of `TowerCenterLoss`, kept so that `import cl.distribute`
and `from cl.distribute import TowerCenterLoss` keep working: TF1 towers
live in `cl.towers` (tf.distribute strategies in `cl.graph.replicas`)."""

from cl.towers import TowerCenterLoss

__all__ = ["TowerCenterLoss"]
