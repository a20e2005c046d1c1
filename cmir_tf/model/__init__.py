"""The model floor (floor 3): encoders, losses, the contrastive model and how it runs.

- ``encoders``: ``AudioEncoder``, ``GenreEncoder``, ``CFEncoder`` (Keras 3 layers with ``get_config``);
- ``losses``: ``nt_xent`` (eq. 9–12), ``weighted_nt_xent``, ``semantic_weights``, cross-replica shares;
- ``contrastive``: ``ContrastiveModel`` (the custom ``train_step``) and the baselines, ``build_model``;
- ``presets``: the training modes (the paper's six and the study's strategies) as loss terms;
- ``published``: ``--variant published`` (the authors' genre / CF encoders, coupled-L2 Adam);
- ``distribute`` (devices, strategies, cross-replica sums), ``precision`` (16-bit CNN, loss scaling),
  ``compat`` (every private Keras/TensorFlow hook, probed against the tested versions).

May import: the ground floor, ``cmir_tf.audio`` and ``cmir_tf.data``.

Public names (stable; import them from here: ``from cmir_tf.model import …``):
``AudioEncoder``, ``CFEncoder``, ``ContrastiveModel``, ``GenreEncoder``, ``Preset``,
``build_model``, ``check_versions``, ``configure_devices``, ``dummy_batch``, ``make_optimizer``,
``make_strategy``, ``mixup``, ``nt_xent``, ``nt_xent_replica_share``, ``resolve``,
``semantic_weights``, ``weighted_nt_xent``, ``weighted_nt_xent_replica_share``.
"""
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "encoders": ["AudioEncoder", "GenreEncoder", "CFEncoder"],
        "losses": ["nt_xent", "weighted_nt_xent", "semantic_weights", "nt_xent_replica_share", "weighted_nt_xent_replica_share"],
        "contrastive": ["ContrastiveModel", "build_model", "dummy_batch", "make_optimizer", "mixup"],
        "presets": ["Preset", "resolve"],
        "distribute": ["make_strategy", "configure_devices"],
        "compat": ["check_versions"],
    },
)
