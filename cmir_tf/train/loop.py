"""Training: :func:`train` (one run, resumable), which ``python -m cmir_tf.train`` (``train/__main__.py``) runs.

With no arguments the command runs end to end on a fresh machine (``cmir_tf.train.embedded``):
synthetic Melon → prepared records → a brief ``contr_cf_g`` run in ``runs/contr_cf_g`` → its audio
encoder exported to ``export/contr_cf_g`` (the export is the door's step, after :func:`train`).

The pieces: configuration and flags in ``cmir_tf.train.config`` (defaults ← ``--config FILE`` ← flags); the
strategy, devices and chief in ``cmir_tf.model.distribute``; the run folder's files (``config.json``,
``model.json``, ``history.csv``, ``checkpoints/``, ``backup/``, ``logs/``, ``curves.png``) in
``cmir_tf.train.rundir``; the callbacks in ``cmir_tf.train.callbacks``. :func:`train` runs them in order: open the
run, build the model, restore the backup, make the datasets, fit.

Starting a run again with the same ``--out`` continues from its last backup (also after SIGKILL):
only the remaining steps of the interrupted epoch are run, with a data seed moved by the point of
resumption so no crop is replayed; a resumed run refuses settings that change what it trains
(``rundir.RESUME_KEYS``) and a backup at or past an epoch's end. ``--restart`` sets the earlier run's
files aside in ``previous/<UTC time>/`` and starts clean. A non-finite loss, or a non-finite weight found
before a backup or checkpoint, stops the run (``NonFiniteLossError``, exit code 3); a fault the input
pipelines find is one ``DataError`` line. This module imports TensorFlow only inside :func:`train`, so
the command's ``--help`` is fast.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
from pathlib import Path

from cmir_tf.constants import CROP_WINDOW
from cmir_tf.data.prepared import PreparedFacts
from cmir_tf.errors import ConfigError, DataError, NonFiniteLossError
from cmir_tf.lock import folder_lock
from cmir_tf.train.config import TrainConfig, model_config
from cmir_tf.train.embedded import default_run_dir, ensure_embedded_data
from cmir_tf.train.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Batches and steps of a run on a prepared folder under a strategy."""

    batch: int  # global training batch
    steps: int  # training steps per epoch
    val_batch: int  # global validation batch: a multiple of the replicas, at most the split's size
    val_steps: int
    replicas: int

    @classmethod
    def plan(cls, cfg: TrainConfig, counts: dict, replicas: int) -> "Schedule":
        """``counts``: examples per split (songs, or pairs of an audio-pair strategy, whose examples are two
        audio rows each; ``cfg.batch_size`` counts rows). A contrastive loss needs at least 2 examples per
        replica (1 has no negative: the loss is 0)."""
        preset = cfg.preset()
        rows = preset.rows_per_example
        batch, n_train, n_val = cfg.batch_size, counts["train"], counts["val"]
        if batch % (replicas * rows):
            raise ConfigError(f"batch size {batch}: must be a multiple of the {replicas} replicas"
                              + (f" × {rows} rows a pair" if rows > 1 else ""))
        val_batch = min(batch // rows, max(replicas, (n_val // replicas) * replicas))  # in examples
        if preset.align or preset.audio_pairs:
            for what, size in (("batch size", batch // rows), ("validation batch", val_batch)):
                if size // replicas < 2:
                    unit = "pair(s)" if rows > 1 else "example(s)"
                    raise ConfigError(
                        f"{what} {size * rows} gives {size // replicas} {unit} per replica on {replicas} "
                        f"replica(s): mode {cfg.mode} needs at least 2 per replica (a contrastive loss of one "
                        "example is 0)" + (f"; the val split holds {n_val}" if what == "validation batch" else ""))
        return cls(batch, cfg.steps_per_epoch or max(1, n_train * rows // batch), val_batch * rows,
                   cfg.validation_steps or max(1, n_val // val_batch), replicas)


def _example_counts(cfg: TrainConfig, facts: PreparedFacts) -> dict:
    """Examples an epoch of each split holds: its songs, or (audio pairs) the pairs of its first epoch."""
    pairs = cfg.preset().audio_pairs
    if pairs is None:
        return facts.counts
    from cmir_tf.data.pair_pipeline import pair_count

    # the validation pairs are the fixed draw of seed 0 (pair_pipeline's evaluation default)
    return {"train": pair_count(facts.path, "train", pairs, cfg.seed), "val": pair_count(facts.path, "val", pairs, 0)}


def _run_dir(cfg: TrainConfig, strategy) -> tuple[RunDir, bool]:
    """The run folder of this process (non-chief workers write under ``workers/<i>``), created, and
    whether this process is the chief."""
    from cmir_tf.model.distribute import is_chief, task_id

    run = RunDir(cfg.out or default_run_dir(cfg.mode))
    chief = is_chief(strategy)
    if not chief:
        run = run.worker(task_id(strategy))
    run.create()
    return run, chief


def _damaged_shard(data: Path, exc: Exception) -> DataError:
    """A ``DataLossError`` from the input pipeline (which does not say which file) → ``DataError`` naming
    the damaged shard, found by reading the splits' shards back with their checksums."""
    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.data.tfrecords import check_shard

    prepared = PreparedData(data)
    for split in ("train", "val"):
        for path in prepared.shard_files(split):
            n, problem = check_shard(path)
            if problem:
                return DataError(f"{path}: damaged shard ({problem}, after {n} good records); rerun prepare into "
                                 f"{data} to rewrite it")
    return DataError(f"{data}: a shard could not be read ({str(exc).strip().splitlines()[0][:200]})")


def _pipeline_error(cfg: TrainConfig, exc: Exception) -> Exception:
    """An input pipeline's check that failed inside ``fit`` → its ``DataError`` (the pair pipeline's own,
    raised in a ``numpy_function``: its one line naming the file), or one for the main pipeline's
    record checks (CF length, frames); any other error is returned unchanged."""
    import tensorflow as tf

    text = str(exc)
    found = re.search(r"DataError: ([^\n]+)", text)
    if found:
        return DataError(found.group(1).strip())
    found = re.search(r"(cf vector length differs from cf_dim|record with n_frames < 256[^;]*)", text)
    if isinstance(exc, tf.errors.InvalidArgumentError) and found:
        return DataError(f"{cfg.data}: a record disagrees with the manifest ({found.group(1)}); "
                         "prepare the folder again")
    return exc


def _build_model(cfg: TrainConfig, facts: PreparedFacts, strategy, run: RunDir, jit: bool):
    """The compiled model with every variable created in the strategy's scope; writes model.json."""
    from cmir_tf.model.contrastive import build_model, dummy_batch

    with strategy.scope():
        model = build_model(word2vec=facts.word2vec, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
                            jit_compile=jit, **model_config(cfg, facts))
        model(dummy_batch(facts.cf_dim), training=False)  # a restore needs the variables
    run.write_model_config(model.get_config())
    return model


def _datasets(cfg: TrainConfig, facts: PreparedFacts, strategy, schedule: Schedule, state: dict | None):
    """Distributed training and validation datasets. A resumed run must not replay the crops it already
    trained on: its data seed moves with the point of resumption (an uninterrupted run keeps cfg.seed)."""
    from cmir_tf.data import pipeline
    from cmir_tf.data.pair_pipeline import make_pair_dataset

    seed = cfg.seed
    if state:
        seed = (cfg.seed * 1_000_003 + int(state["epoch"]) * 10_007 + int(state["step"])) % (2**31 - 1)
    pipeline.tune_malloc()  # glibc: keep ~180 KB record buffers off mmap (≈ −15 % pipeline CPU, measured)
    pairs = cfg.preset().audio_pairs
    make = pipeline.make_dataset if pairs is None else functools.partial(make_pair_dataset, source=pairs)

    from cmir_tf.model.distribute import input_options

    host = dict(parse_parallelism=cfg.parse_parallelism, threadpool_size=cfg.input_threads)
    if pairs is None:  # the pair pipeline reads records by offset: no shard interleave to size
        host["cycle_length"] = cfg.read_parallelism
        if cfg.variant == "published":
            host["crop_window"] = CROP_WINDOW

    def train_fn(ctx):
        return make(facts.path, "train", schedule.batch, training=True, seed=seed, input_context=ctx, **host)

    def val_fn(ctx):
        if cfg.random_val_crops:  # an endless stream of new random crops (the seed apart from training's)
            return make(facts.path, "val", schedule.val_batch, training=False, input_context=ctx,
                        drop_remainder=True, random_crops=True, seed=seed + 7, **host)
        return make(facts.path, "val", schedule.val_batch, training=False, input_context=ctx,
                    drop_remainder=True, **host).repeat()

    options = input_options(cfg.device_prefetch)
    return (strategy.distribute_datasets_from_function(train_fn, options),
            strategy.distribute_datasets_from_function(val_fn, options))


def _with_host_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the input pipeline's parallelism this host gives by default (``pipeline.host_defaults``)
    where the configuration leaves it open, so config.json records what the run used."""
    from cmir_tf.data.pipeline import host_defaults

    derived = host_defaults()
    return dataclasses.replace(
        cfg, read_parallelism=cfg.read_parallelism or derived["cycle_length"],
        parse_parallelism=cfg.parse_parallelism or derived["parse_parallelism"],
        input_threads=cfg.input_threads or derived["threadpool_size"])


def _fit(model, cfg: TrainConfig, run: RunDir, schedule: Schedule, datasets, state: dict | None) -> None:
    """Train the epochs left: first the rest of an interrupted epoch, then the others."""
    import keras
    import tensorflow as tf

    from cmir_tf.train.callbacks import BestAndLast, HistoryCSV, ResumableBackup, StopOnNonFiniteLoss
    from cmir_tf.train.progress import TrainingProgress

    epoch, step = (int(state["epoch"]), int(state["step"])) if state else (0, 0)
    best = float(state["best_val_loss"]) if state else float("inf")
    stopper = StopOnNonFiniteLoss()
    callbacks = [
        stopper,
        ResumableBackup(run, cfg.backup_every, schedule.steps, offset=step, best=best, guard=stopper),
        BestAndLast(run, best, cfg.keep_last, guard=stopper),
        HistoryCSV(run.history_path),
        keras.callbacks.TensorBoard(str(run.logs_dir), update_freq="epoch", profile_batch=0),
        TrainingProgress(cfg.epochs, schedule.steps, first_epoch=epoch, first_step=step),
    ]
    train_ds, val_ds = datasets
    fit_args = dict(shuffle=False, validation_data=val_ds, validation_steps=schedule.val_steps, callbacks=callbacks,
                    verbose=0)  # TrainingProgress reports
    try:
        if step:  # finish the interrupted epoch first: only its remaining steps
            model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=schedule.steps - step,
                      **fit_args)
            epoch += 1
        if not stopper.failed and epoch < cfg.epochs:
            model.fit(train_ds, epochs=cfg.epochs, initial_epoch=epoch, steps_per_epoch=schedule.steps, **fit_args)
    except tf.errors.DataLossError as exc:
        raise _damaged_shard(Path(cfg.data), exc) from None
    except tf.errors.OpError as exc:  # the pipelines' record checks
        raise _pipeline_error(cfg, exc) from None
    if stopper.failed:
        raise NonFiniteLossError(f"{run}: training stopped: {stopper.failed}")


def _check_against_data(cfg: TrainConfig, facts: PreparedFacts) -> None:
    """Settings that must fit the prepared folder: the genre encoder's heads split its attention width,
    the word2vec size (``encoders.GenreEncoder``)."""
    if {"a2g", "g2p"} & set(cfg.preset().parts) and facts.w2v_dim % cfg.num_heads:
        width = facts.w2v_dim
        choices = ", ".join(str(h) for h in range(1, width + 1) if width % h == 0)
        raise ConfigError(f"--num-heads {cfg.num_heads}: must divide the genre encoder's attention width, the "
                          f"word2vec size {width} of {facts.path}; choose one of {choices}")


def train(cfg: TrainConfig, *, restart: bool = False) -> Path:
    """Train according to ``cfg``; return the run directory. Resumes from the run's backup if present.

    The run folder is locked while training (``cmir_tf.lock``): a second run into it raises BusyError."""
    cfg.validate()
    from cmir_tf.model.distribute import configure_devices, make_strategy, resolve_jit_compile
    from cmir_tf.model.precision import cnn_dtype

    configure_devices(cfg.devices)
    data = Path(cfg.data) if cfg.data else ensure_embedded_data(cfg.seed, cfg.synth_songs, cfg.synth_playlists)
    facts = PreparedFacts.for_training(data)
    if cfg.variant == "published":
        from cmir_tf.model.published import check_prepared

        check_prepared(facts.path, facts.manifest)
    _check_against_data(cfg, facts)
    strategy = make_strategy(cfg.strategy)
    jit = resolve_jit_compile(cfg.jit_compile, strategy, cnn_dtype=cnn_dtype(cfg.precision))
    cfg = _with_host_defaults(cfg)
    schedule = Schedule.plan(cfg, _example_counts(cfg, facts), strategy.num_replicas_in_sync)
    run, chief = _run_dir(cfg, strategy)
    with folder_lock(run.path):
        effective = dataclasses.asdict(cfg) | {"data": str(Path(facts.path).resolve()), "out": str(run)}
        moved = run.open_for_training(effective, restart, steps_per_epoch=schedule.steps)
        if moved:
            print(f"[cmir_tf] restart: the earlier run of {run} is set aside in {moved}", flush=True)
        try:
            _train_in(run, dataclasses.replace(cfg, data=str(data)), facts, strategy, schedule, jit)
        except KeyboardInterrupt:
            where = f"from its latest backup ({run.backup_dir})" if run.has_backup() else "(no backup yet: from its start)"
            print(f"\n[cmir_tf] interrupted: the same command resumes {run} {where}; --restart starts over",
                  file=sys.stderr, flush=True)
            raise
    if chief and run.history_path.exists():
        from cmir_tf.train.callbacks import plot_curves

        plot_curves(run.history_path, run.curves_path)
    return run.path


def _train_in(run: RunDir, cfg: TrainConfig, facts: PreparedFacts, strategy, schedule: Schedule, jit: bool) -> None:
    """Build the model, restore the backup, make the datasets and fit: the locked part of :func:`train`."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = _build_model(cfg, facts, strategy, run, jit)
    with strategy.scope():
        state = run.restore_backup(model)
    first_epoch = int(state["epoch"]) if state else 0
    if first_epoch >= cfg.epochs:
        print(f"[cmir_tf] {run}: already trained {cfg.epochs} epochs (use --restart or more --epochs)")
        return
    if state and state.get("weights_removed"):
        raise ConfigError(f"{run}: completed {first_epoch} epochs with --no-keep-backup, so its backup holds no "
                          f"weights to continue from; --epochs {first_epoch} or fewer, or --restart")
    if state:
        print(f"[cmir_tf] resuming {run} in epoch {first_epoch + 1} after step {int(state['step'])} "
              f"of {schedule.steps}", flush=True)
    datasets = _datasets(cfg, facts, strategy, schedule, state)
    from cmir_tf.train.progress import run_summary

    counts = _example_counts(cfg, facts)
    print(run_summary(cfg, schedule, counts, run, jit=jit, first_epoch=first_epoch), flush=True)
    _fit(model, cfg, run, schedule, datasets, state)
    if not cfg.keep_backup:
        run.drop_backup_weights()
