"""Distribution: logical CPU devices, the ``tf.distribute`` strategy of a run, the chief, cross-replica sums.

- :func:`configure_devices` splits the CPU into N logical devices (MirroredStrategy on one machine);
  it must run before TensorFlow initialises its devices.
- :func:`make_strategy` — ``auto`` (mirrored when several devices are visible, else the default
  strategy), ``default``, ``mirrored`` (all local GPUs, else all logical CPUs) or ``multiworker``
  (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; installs ``compat.patch_multiworker_scalar_reduce``).
- :func:`is_chief` — the task that owns the run folder: the ``chief`` task, else worker 0 when the
  cluster has no chief, and any process without a cluster.
- :func:`replica_context`, :func:`global_sum`, :func:`global_count` — inside a ``train_step`` under a
  strategy with R > 1 replicas: sums over the replicas (identity on one device), used to turn each
  replica's share of a loss into global-batch values.

TensorFlow is imported inside the functions, so the command line can read :data:`STRATEGIES` quickly.
"""
from __future__ import annotations

import os

from .errors import ConfigError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def configure_devices(n: int | None) -> None:
    """Split the (first) CPU into ``n`` logical devices. Must run before TensorFlow initialises."""
    import tensorflow as tf

    if not n or n < 2:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        raise ConfigError(f"devices {n}: TensorFlow was already initialised in this process ({exc})") from exc


def make_strategy(name: str):
    """The strategy called ``name`` (one of :data:`STRATEGIES`)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"strategy: unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy multiworker: set TF_CONFIG (cluster and task) in the environment")
        from .compat import patch_multiworker_scalar_reduce

        patch_multiworker_scalar_reduce()
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    """Whether this process owns the run folder (see the module docstring)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())


def task_id(strategy) -> int:
    """This worker's index in the cluster (0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None else 0


def in_multi_replica_context() -> bool:
    """True under a strategy scope with more than one replica in sync (cross-replica BatchNorm wanted)."""
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def replica_context():
    """The current replica context when there are several replicas in sync, else None."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def global_sum(values):
    """Sum a list of scalars over the replicas (identity on one device)."""
    import tensorflow as tf

    ctx = replica_context()
    if ctx is None:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def global_count(batch_size, dtype):
    """Number of rows in the global batch, as ``dtype`` (identity on one device)."""
    import tensorflow as tf

    n = tf.cast(batch_size, dtype)
    ctx = replica_context()
    return n if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, n)
