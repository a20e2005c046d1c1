"""Distribution: logical CPU devices, the ``tf.distribute`` strategy of a run, the chief, cross-replica sums.

- :func:`configure_devices` splits the CPU into N logical devices (MirroredStrategy on one machine);
  it must run before TensorFlow initialises its devices.
- :func:`make_strategy` — ``auto`` (mirrored over the GPUs when any is visible — one GPU too, so its
  batches are prefetched onto it — or over several logical CPUs, else the default strategy),
  ``default``, ``mirrored`` (all local GPUs, else all logical CPUs) or ``multiworker``
  (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; installs ``compat.patch_multiworker_scalar_reduce``).
- :func:`input_options` — how batches reach the devices (prefetched onto each replica's device).
- :func:`is_chief` — the task that owns the run folder: the ``chief`` task, else worker 0 when the
  cluster has no chief, and any process without a cluster.
- :func:`replica_context`, :func:`global_sum`, :func:`global_count`, :func:`gather_rows` — inside a
  ``train_step`` under a strategy with R > 1 replicas: sums over the replicas (identity on one device),
  used to turn each replica's share of a loss into global-batch values, and every replica's rows.
- :func:`agree_on_overflow` — with a loss-scaled (float16) optimizer, every replica skips a step when any
  replica's gradients overflowed.
- :func:`resolve_jit_compile` — whether each replica's step is compiled with XLA (``--jit-compile``).

TensorFlow is imported inside the functions, so the command line can read :data:`STRATEGIES` quickly.
"""
from __future__ import annotations

import os

from cmir_tf.errors import ConfigError
from cmir_tf.model.precision import is_loss_scaled, needs_loss_scaling

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
JIT_COMPILE = ("auto", "on", "off")


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
        from cmir_tf.model.compat import patch_multiworker_scalar_reduce

        patch_multiworker_scalar_reduce()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if name == "mirrored" or (name == "auto" and (len(devices) > 1 or gpus)):
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def input_options(device_prefetch: int):
    """``tf.distribute.InputOptions`` for ``distribute_datasets_from_function``: each replica's next
    ``device_prefetch`` batches are copied to its device while the current step runs (0: batches stay in
    host memory and each step copies its own)."""
    import tensorflow as tf

    if device_prefetch < 0:
        raise ConfigError(f"device prefetch must be ≥ 0 batches, got {device_prefetch}")
    return tf.distribute.InputOptions(experimental_fetch_to_device=device_prefetch > 0,
                                      experimental_per_replica_buffer_size=max(1, int(device_prefetch)))


def _replica_devices(strategy) -> list[str]:
    """The devices the replicas of ``strategy`` run on (the default strategy: GPU 0 if visible, else the CPU)."""
    import tensorflow as tf

    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list: TensorFlow places ops on GPU 0 if any
        gpus = tf.config.list_logical_devices("GPU")
        return [gpus[0].name if gpus else "/device:CPU:0"]


def resolve_jit_compile(setting, strategy=None, *, cnn_dtype=None) -> bool:
    """Whether each replica's forward and backward pass is compiled with XLA under ``strategy``.

    ``setting``: ``"on"`` / True, ``"off"`` / False / None, or ``"auto"``: on when every replica is a
    GPU (XLA fuses the convolution blocks' BatchNorm / ReLU / pooling and removes per-op launches),
    except under the multi-worker strategy, whose cross-host collectives inside XLA are unproven; off
    on CPU, where XLA made the float32 step 2–7× slower here — except for a float16 CNN (``cnn_dtype``)
    on one CPU replica, whose CPU gradient kernels are ~50× slower than XLA's (measured: one 128-channel
    block's convolution 55 s against 1.1 s). ``on`` with several replicas on CPU devices is refused:
    TensorFlow cannot compile cross-replica collectives for CPU devices ("Collectives are not yet
    implemented for CPU devices when compiling with XLA"). ``strategy`` defaults to the current one.
    """
    import tensorflow as tf


    if setting in (False, None, "off"):
        return False
    if setting not in (True, "on", "auto"):
        raise ConfigError(f"jit_compile: unknown setting {setting!r}; choose one of {', '.join(JIT_COMPILE)}")
    strategy = strategy or tf.distribute.get_strategy()
    on_gpus = all("GPU" in d.upper() for d in _replica_devices(strategy))
    replicas = strategy.num_replicas_in_sync
    if setting == "auto":
        if on_gpus:
            return not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        return replicas == 1 and needs_loss_scaling(cnn_dtype)
    if replicas > 1 and not on_gpus:
        raise ConfigError(
            f"jit_compile on: {strategy.num_replicas_in_sync} replicas on CPU devices; TensorFlow cannot compile "
            "cross-replica collectives for CPU devices with XLA (use it off, or one replica)")
    return True


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


def gather_rows(x):
    """Every replica's rows of ``x`` (first axis) in replica order: ``(rows, offset, total)`` where
    ``offset`` is this replica's first row in ``rows`` and ``total`` their number. Its gradient sums the
    upstream gradients of every replica (each replica's loss depends on every replica's rows).

    Outside XLA: ``all_gather`` of the rows and of their counts (replicas may hold different numbers of
    rows, e.g. a last partial batch). Inside an XLA-compiled replica step: an all-reduce of the rows
    placed at this replica's offset in zeros — ``all_gather`` would leave the compiled step through a
    ``merge_call``, which XLA cannot hold — which needs every replica to hold the same static number
    of rows (``ContrastiveModel`` checks that its batches have a fixed size under XLA).
    """
    import tensorflow as tf

    from cmir_tf.model.compat import in_xla_context

    ctx = replica_context()
    if ctx is None:
        return x, 0, tf.shape(x)[0]
    n, rid = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
    if in_xla_context():
        m = x.shape[0]
        if m is None:
            raise ConfigError("XLA under several replicas needs batches of one fixed size (drop_remainder=True)")
        padding = [[rid * m, (n - 1 - rid) * m]] + [[0, 0]] * (x.shape.rank - 1)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.pad(x, padding)), rid * m, n * m
    sizes = ctx.all_gather(tf.reshape(tf.shape(x)[0], [1]), axis=0)
    return ctx.all_gather(x, axis=0), tf.reduce_sum(sizes[:rid]), tf.reduce_sum(sizes)


def global_count(batch_size, dtype):
    """Number of rows in the global batch, as ``dtype`` (identity on one device)."""
    import tensorflow as tf

    n = tf.cast(batch_size, dtype)
    ctx = replica_context()
    return n if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, n)


def agree_on_overflow(grads, optimizer):
    """In a replica context with several replicas and a loss-scaled optimizer: make every replica's
    gradients non-finite when any replica's are, so all replicas skip the step together (one scalar
    all-reduce). Otherwise ``grads`` unchanged."""
    import tensorflow as tf

    ctx = replica_context()
    if ctx is None or not is_loss_scaled(optimizer):
        return grads
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    overflowed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)) > 0
    first = next(i for i, g in enumerate(grads) if g is not None)
    grads = list(grads)  # one NaN anywhere is enough: the optimizer checks every gradient
    grads[first] = tf.where(overflowed, tf.constant(float("nan"), grads[first].dtype), grads[first])
    return grads
