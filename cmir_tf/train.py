"""Training: configuration, distribution strategy, callbacks, resume, and the ``python -m cmir_tf.train`` CLI.

With no arguments the embedded default runs end to end on a fresh machine: it writes a small synthetic
Melon set (``data/synth_melon``) if absent, prepares it (``tfrecords/synth``; a rerun resumes), trains
the default ``contr_cf_g`` model briefly (``runs/contr_cf_g``) and exports its audio encoder
(``export/contr_cf_g``).

Configuration precedence: built-in defaults (the paper's) ← ``--config FILE`` (JSON or YAML, same keys
as the flags with ``_`` for ``-``) ← command-line flags. The effective configuration is written to
``RUN_DIR/config.json``.

A run directory holds::

    config.json          effective configuration
    history.csv          one row per epoch: epoch, loss, val_loss and each alignment's loss
    checkpoints/         best.weights.h5 (lowest val_loss), last.weights.h5
    backup/              resumable state (weights, optimizer, epoch/step), rewritten every few steps
    logs/                TensorBoard event files
    curves.png           training / validation curves

Starting a run again with the same ``--out`` continues from its last backup (also after SIGKILL);
``--restart`` discards it.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import constants as C
from .errors import ConfigError, DataError, ExportError

MODES = tuple(C.MODES)
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16")

# The embedded default: where a fresh checkout puts its synthetic data, prepared records and runs.
DEFAULT_MELON = Path("data/synth_melon")
DEFAULT_PREPARED = Path("tfrecords/synth")
DEFAULT_RUNS = Path("runs")
DEFAULT_EXPORTS = Path("export")


@dataclasses.dataclass
class TrainConfig:
    """Every knob of a training run. Defaults are the paper's (sec. 3.2) unless stated."""

    data: str | None = None  # prepared folder; None → the embedded synthetic default
    mode: str = "contr_cf_g"
    epochs: int = 10
    steps_per_epoch: int | None = None  # None → one pass over the training split
    validation_steps: int | None = None  # None → one pass over the validation split
    batch_size: int = C.BATCH_SIZE  # global batch
    lr: float = C.LEARNING_RATE
    weight_decay: float = 0.0
    temperature: float = C.TEMPERATURE
    dropout: float = C.DROPOUT
    num_heads: int = C.NUM_HEADS
    embed_dim: int = C.EMBED_DIM
    lambda_a2g: float = 1.0
    lambda_a2p: float = 1.0
    lambda_g2p: float = 1.0
    seed: int = 0
    precision: str = "float32"  # or "mixed_bfloat16": the CNN blocks in bfloat16 (≈1.8× faster on AVX512-BF16 CPUs)
    out: str | None = None  # run dir; None → runs/<mode>
    strategy: str = "auto"
    devices: int | None = None
    backup_every: int = 20  # steps between resumable backups (and at every epoch end)
    export: bool = True  # export the audio encoder when training ends (embedded default)
    export_dir: str | None = None  # None → export/<run name>
    synth_songs: int | None = None  # embedded default: size of the synthetic Melon set
    synth_playlists: int | None = None

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode: unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy: unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name in ("epochs", "batch_size", "num_heads", "embed_dim", "backup_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be ≥ 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "validation_steps", "devices"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be ≥ 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"--lr: must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature: must be > 0, got {self.temperature}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout: must be in [0, 1), got {self.dropout}")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML config file (keys as flags, ``-`` or ``_``), checking every key is known."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 — any parser error becomes one clear message
        raise ConfigError(f"--config {path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option → value, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"--config {path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        out[name] = value
    return out


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.train",
        description=(
            "Train the cross-modal contrastive model (or a baseline) on prepared Melon TFRecords. "
            "With no arguments: synthesise a small Melon set, prepare it, train contr_cf_g briefly and export it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config file
    )
    p.add_argument("--data", help="prepared folder (output of `python -m cmir_tf.prepare`); default: the embedded synthetic set, made if absent")
    p.add_argument("--mode", choices=MODES, help="contr_cf_g: A2G+A2P+G2P (paper's full model); contr_g: A2G; contr_cf: A2P; bline_g / bline_cf / bline_cf_g: audio encoder trained to predict genres / regress CF / both [default contr_cf_g]")
    p.add_argument("--epochs", type=int, help="number of epochs [default 10; embedded default 3]")
    p.add_argument("--steps-per-epoch", type=int, help="training steps per epoch [default: one pass over the training split]")
    p.add_argument("--validation-steps", type=int, help="validation steps per epoch [default: one pass over the validation split]")
    p.add_argument("--batch-size", type=int, help=f"global batch size, split across replicas [default {C.BATCH_SIZE}]")
    p.add_argument("--lr", type=float, help=f"Adam learning rate [default {C.LEARNING_RATE}]")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW); the published code used 1e-4 [default 0]")
    p.add_argument("--temperature", type=float, help=f"NT-Xent temperature τ [default {C.TEMPERATURE}]")
    p.add_argument("--dropout", type=float, help=f"dropout probability p of every encoder [default {C.DROPOUT}]")
    p.add_argument("--num-heads", type=int, help=f"self-attention heads of the genre encoder [default {C.NUM_HEADS}]")
    p.add_argument("--embed-dim", type=int, help=f"size of the shared embedding space [default {C.EMBED_DIM}]")
    p.add_argument("--lambda-a2g", type=float, help="weight of the audio-to-genre loss [default 1]")
    p.add_argument("--lambda-a2p", type=float, help="weight of the audio-to-playlist loss [default 1]")
    p.add_argument("--lambda-g2p", type=float, help="weight of the genre-to-playlist loss [default 1]")
    p.add_argument("--precision", choices=PRECISIONS, help="float32 (the paper's numerics) or mixed_bfloat16: convolution blocks in bfloat16 with float32 weights and losses, ≈1.8× faster on CPUs with AVX512-BF16; exports are always float32 [default float32]")
    p.add_argument("--seed", type=int, help="seed of weights, crops and shuffling [default 0]")
    p.add_argument("--out", help="run directory; rerunning with the same one resumes [default runs/<mode>]")
    p.add_argument("--config", help="JSON or YAML file with any of these options (keys like `batch_size`); flags override it")
    p.add_argument("--strategy", choices=STRATEGIES, help="auto: mirrored when several devices are visible, else default; default: one device; mirrored: MirroredStrategy over all local devices; multiworker: MultiWorkerMirroredStrategy from TF_CONFIG [default auto]")
    p.add_argument("--devices", type=int, help="split the CPU into N logical devices (to run MirroredStrategy on one machine)")
    p.add_argument("--backup-every", type=int, help="steps between resumable backups [default 20]")
    p.add_argument("--no-export", dest="export", action="store_false", help="do not export the audio encoder at the end")
    p.add_argument("--export-dir", help="where to export [default export/<run name>]")
    p.add_argument("--restart", action="store_true", help="discard the run directory's backup and start over")
    p.add_argument("--synth-songs", type=int, help="embedded default only: songs of the synthetic Melon set")
    p.add_argument("--synth-playlists", type=int, help="embedded default only: playlists of the synthetic Melon set")
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse flags over the config file over the defaults. Returns (config, restart)."""
    ns = vars(build_arg_parser().parse_args(argv))
    restart = bool(ns.pop("restart", False))
    values: dict[str, Any] = {}
    if "config" in ns:
        values.update(load_config_file(ns.pop("config")))
    values.update(ns)
    embedded = values.get("data") is None
    if embedded:  # the embedded default trains briefly: minutes on 2 CPU cores, not the paper's schedule
        values.setdefault("epochs", 3)
        values.setdefault("batch_size", 64)
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg, restart


# ----------------------------------------------------------------------------------------------------
# Devices and strategy


def configure_devices(n: int | None) -> None:
    """Split the (first) CPU into ``n`` logical devices. Must run before TensorFlow initialises."""
    if not n or n < 2:
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        raise ConfigError(f"--devices {n}: TensorFlow was already initialised in this process ({exc})") from exc


def make_strategy(name: str):
    import tensorflow as tf

    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy multiworker: set TF_CONFIG (cluster and task) in the environment")
        _patch_keras_multiworker_scalar_reduce()
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def _patch_keras_multiworker_scalar_reduce() -> None:
    """Work around Keras 3 (≤ 3.15) reducing scalar step outputs with ``axis=0`` under multi-worker.

    Its ``reduce_per_replica`` calls ``strategy.reduce("MEAN", v, axis=0)`` for every per-replica output
    under ``MultiWorkerMirroredStrategy``, which fails on the scalar losses every ``train_step`` returns
    ("Invalid reduction dimension 0 for input with 0 dimensions"). Scalars are averaged over replicas
    instead (``axis=None``); everything else goes to Keras's own reduction unchanged.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_cmir_scalar_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def _reduce(v):
                rank = v.values[0].shape.rank if hasattr(v, "values") else tf.convert_to_tensor(v).shape.rank
                return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

            return tf.nest.map_structure(_reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._cmir_scalar_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())


# ----------------------------------------------------------------------------------------------------
# Data


def ensure_embedded_data(cfg: TrainConfig) -> Path:
    """The embedded default: synthesise Melon (if absent) and prepare it (resuming); return the folder."""
    from . import prepare, synth

    melon = DEFAULT_MELON
    if not (melon / "song_meta.json").exists():
        kwargs = {}
        if cfg.synth_songs:
            kwargs["songs"] = cfg.synth_songs
        if cfg.synth_playlists:
            kwargs["playlists"] = cfg.synth_playlists
        print(f"[cmir_tf] writing a synthetic Melon set to {melon} …", flush=True)
        synth.make_synthetic_melon(melon, seed=cfg.seed, **kwargs)
    if not (DEFAULT_PREPARED / "manifest.json").exists():
        print(f"[cmir_tf] preparing {melon} → {DEFAULT_PREPARED} …", flush=True)
        prepare.prepare(melon, DEFAULT_PREPARED, seed=cfg.seed, workers=min(2, os.cpu_count() or 1))
    return DEFAULT_PREPARED


def read_prepared(data: Path) -> dict:
    """Check a prepared folder and return its manifest, naming what is missing if it is not one."""
    if not data.is_dir():
        raise DataError(f"--data {data}: no such folder (make one with `python -m cmir_tf.prepare --melon DIR --out {data}`)")
    manifest_path = data / "manifest.json"
    missing = [n for n in ("manifest.json", "word2vec.npy", "vocab.json") if not (data / n).exists()]
    if missing:
        raise DataError(f"--data {data}: not a prepared folder, missing {', '.join(missing)} (run `python -m cmir_tf.prepare`)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for split in ("train", "val"):
        if not manifest.get("counts", {}).get(split):
            raise DataError(f"--data {data}: manifest.json counts no {split} records")
        if not list((data / split).glob("*.tfrecord*")):
            raise DataError(f"--data {data}: missing {split}/ shards (*.tfrecord)")
    return manifest


# ----------------------------------------------------------------------------------------------------
# Callbacks


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _make_callbacks_module():
    """Callback classes need keras at definition time; build them lazily so the CLI's --help is fast."""
    import keras
    import numpy as np

    def _finite_loss(logs) -> bool:
        loss = (logs or {}).get("loss")
        return loss is None or bool(np.isfinite(float(loss)))

    class NonFiniteLossError(RuntimeError):
        pass

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        """Stop the run at the first non-finite loss, naming the epoch and step (TerminateOnNaN does not)."""

        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.failed: str | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.failed = f"non-finite loss ({float(loss)}) at epoch {self.epoch + 1}, step {batch + 1}"
                self.model.stop_training = True

    class ResumableBackup(keras.callbacks.Callback):
        """Back up weights, optimizer state and position every ``every`` steps and at each epoch end.

        Keras's BackupAndRestore keeps only the weights and restarts the interrupted epoch from its first
        step with a fresh optimizer; this keeps Adam's moments and the step within the epoch, so a killed
        run resumes where its last backup was taken. Files are written to temporary names and renamed.
        """

        def __init__(self, backup_dir: Path, every: int, steps_per_epoch: int):
            super().__init__()
            self.dir = Path(backup_dir)
            self.every = every
            self.steps_per_epoch = steps_per_epoch
            self.epoch = 0
            self.offset = 0  # steps of the current epoch done before this fit() call (resume)
            self.best = math.inf

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            step = self.offset + batch + 1
            if step % self.every == 0 and step < self.steps_per_epoch and _finite_loss(logs):
                self.save(self.epoch, step)

        def on_epoch_end(self, epoch, logs=None):
            if not _finite_loss(logs):  # never back up weights a diverged step produced
                return
            val = (logs or {}).get("val_loss")
            if val is not None and np.isfinite(val):
                self.best = min(self.best, float(val))
            self.offset = 0
            self.save(epoch + 1, 0)

        def save(self, epoch: int, step: int) -> None:
            self.dir.mkdir(parents=True, exist_ok=True)
            weights = self.dir / "weights.weights.h5"
            tmp_w = self.dir / "tmp.weights.h5"
            self.model.save_weights(tmp_w)
            opt_vars = {f"v{i:05d}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)}
            tmp_o = self.dir / "optimizer.tmp.npz"
            np.savez(tmp_o, **opt_vars)
            os.replace(tmp_w, weights)
            os.replace(tmp_o, self.dir / "optimizer.npz")
            state = {"epoch": epoch, "step": step, "best_val_loss": self.best, "time": time.time()}
            _atomic_write_text(self.dir / "state.json", json.dumps(state))

        @staticmethod
        def restore(model, backup_dir: Path) -> dict | None:
            state_path = Path(backup_dir) / "state.json"
            if not state_path.exists():
                return None
            state = json.loads(state_path.read_text(encoding="utf-8"))
            model.load_weights(Path(backup_dir) / "weights.weights.h5")
            model.optimizer.build(model.trainable_variables)
            with np.load(Path(backup_dir) / "optimizer.npz", allow_pickle=False) as saved:
                values = [saved[k] for k in sorted(saved.files)]
            variables = model.optimizer.variables
            if len(values) != len(variables):
                raise DataError(f"{backup_dir}/optimizer.npz: {len(values)} optimizer variables, model has {len(variables)}")
            for var, value in zip(variables, values):
                var.assign(value)
            return state

    class BestAndLast(keras.callbacks.Callback):
        """checkpoints/best.weights.h5 (lowest val_loss so far, across resumes) and last.weights.h5."""

        def __init__(self, ckpt_dir: Path, best: float = math.inf):
            super().__init__()
            self.dir = Path(ckpt_dir)
            self.best = best

        def _save(self, name: str) -> None:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f"tmp-{name}"
            self.model.save_weights(tmp)
            os.replace(tmp, self.dir / name)

        def on_epoch_end(self, epoch, logs=None):
            val = (logs or {}).get("val_loss", (logs or {}).get("loss"))
            self._save("last.weights.h5")
            if val is not None and np.isfinite(val) and val < self.best:
                self.best = float(val)
                self._save("best.weights.h5")

    return NonFiniteLossError, StopOnNonFiniteLoss, ResumableBackup, BestAndLast


def plot_curves(history_csv: Path, out_png: Path) -> None:
    """Training / validation curves of every logged loss, one panel per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    names = [k for k in rows[0] if k != "epoch" and not k.startswith("val_")]
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, [float(r[name]) for r in rows], "o-", label="train")
        if f"val_{name}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{name}"]) for r in rows], "s--", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    tmp = out_png.with_name("tmp-" + out_png.name)
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, out_png)


# ----------------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig, *, restart: bool = False) -> Path:
    """Train according to ``cfg``; return the run directory. Resumes from the run's backup if present."""
    cfg.validate()
    configure_devices(cfg.devices)
    import keras
    import numpy as np

    from . import pipeline
    from .model import build_model, dummy_batch

    data = Path(cfg.data) if cfg.data else ensure_embedded_data(cfg)
    manifest = read_prepared(data)
    run_dir = Path(cfg.out) if cfg.out else DEFAULT_RUNS / cfg.mode
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    if not chief:  # non-chief workers write their copies where they cannot clobber the chief's
        run_dir = run_dir / "workers" / str(strategy.cluster_resolver.task_id)
    backup_dir = run_dir / "backup"
    if restart and backup_dir.exists():
        import shutil

        shutil.rmtree(backup_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    effective = dataclasses.asdict(cfg) | {"data": str(data.resolve()), "out": str(run_dir)}
    if (run_dir / "config.json").exists() and (backup_dir / "state.json").exists():
        previous = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        changed = {k for k in ("mode", "batch_size", "embed_dim", "num_heads", "data") if previous.get(k) != effective.get(k)}
        if changed:
            raise ConfigError(
                f"{run_dir}: holds a run with different {', '.join(sorted(changed))}; "
                "use another --out, or --restart to discard it")
    _atomic_write_text(run_dir / "config.json", json.dumps(effective, indent=2, sort_keys=True))

    keras.utils.set_random_seed(cfg.seed)
    n_train, n_val = manifest["counts"]["train"], manifest["counts"]["val"]
    batch = cfg.batch_size
    replicas = strategy.num_replicas_in_sync
    if batch % replicas:
        raise ConfigError(f"--batch-size {batch}: must be a multiple of the {replicas} replicas")
    steps = cfg.steps_per_epoch or max(1, n_train // batch)
    val_batch = min(batch, max(replicas, (n_val // replicas) * replicas))
    val_steps = cfg.validation_steps or max(1, n_val // val_batch)


    word2vec = np.load(data / "word2vec.npy", allow_pickle=False)
    with strategy.scope():
        model = build_model(
            cfg.mode, word2vec, dropout=cfg.dropout, temperature=cfg.temperature,
            lambdas=(cfg.lambda_a2g, cfg.lambda_a2p, cfg.lambda_g2p), embed_dim=cfg.embed_dim,
            num_heads=cfg.num_heads, cf_dim=int(manifest.get("cf_dim", C.CF_DIM)),
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
            cnn_dtype=None if cfg.precision == "float32" else cfg.precision,
        )
        # create every variable now (a restore needs them): one call on a dummy batch of the pipeline's shape
        model(dummy_batch(int(manifest.get("cf_dim", C.CF_DIM))), training=False)

    NonFiniteLossError, StopOnNonFiniteLoss, ResumableBackup, BestAndLast = _make_callbacks_module()
    initial_epoch, initial_step, best = 0, 0, math.inf
    with strategy.scope():
        state = ResumableBackup.restore(model, backup_dir) if backup_dir.exists() else None
    if state:
        initial_epoch, initial_step = int(state["epoch"]), int(state["step"])
        best = float(state.get("best_val_loss", math.inf))
        print(f"[cmir_tf] resuming {run_dir} at epoch {initial_epoch + 1}, step {initial_step}", flush=True)
    # A resumed run must not replay the crops it already trained on: its data seed moves with the point
    # of resumption (an uninterrupted run keeps cfg.seed, so it is reproducible).
    data_seed = cfg.seed if not state else (cfg.seed * 1_000_003 + initial_epoch * 10_007 + initial_step) % (2**31 - 1)
    pipeline.tune_malloc()  # glibc: keep ~180 KB record buffers off mmap (≈ −15 % pipeline CPU, measured)

    def train_fn(ctx):
        return pipeline.make_dataset(data, "train", batch, training=True, seed=data_seed, input_context=ctx)

    def val_fn(ctx):
        return pipeline.make_dataset(data, "val", val_batch, training=False, input_context=ctx,
                                     drop_remainder=True).repeat()

    train_ds = strategy.distribute_datasets_from_function(train_fn)
    val_ds = strategy.distribute_datasets_from_function(val_fn)
    if initial_epoch >= cfg.epochs:
        print(f"[cmir_tf] {run_dir}: already trained {cfg.epochs} epochs (use --restart or more --epochs)")
    else:
        stopper = StopOnNonFiniteLoss()
        backup = ResumableBackup(backup_dir, cfg.backup_every, steps)
        backup.best = best
        callbacks = [
            stopper,
            backup,
            BestAndLast(run_dir / "checkpoints", best),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch", profile_batch=0),
        ]
        fit_args = dict(shuffle=False, validation_data=val_ds, validation_steps=val_steps, callbacks=callbacks, verbose=2 if not sys.stdout.isatty() else 1)
        print(f"[cmir_tf] training {cfg.mode} on {data} ({n_train} train / {n_val} val songs), "
              f"{replicas} replica(s), batch {batch}, {steps} steps/epoch, epochs {initial_epoch + 1}–{cfg.epochs} → {run_dir}", flush=True)
        if initial_step:  # finish the interrupted epoch first: only its remaining steps
            backup.offset = initial_step
            model.fit(train_ds, epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                      steps_per_epoch=steps - initial_step, **fit_args)
            initial_epoch += 1
        if not stopper.failed and initial_epoch < cfg.epochs:
            model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, **fit_args)
        if stopper.failed:
            raise NonFiniteLossError(f"{run_dir}: training stopped: {stopper.failed}")
    if chief and (run_dir / "history.csv").exists():
        plot_curves(run_dir / "history.csv", run_dir / "curves.png")
    return run_dir


def export_after_training(cfg: TrainConfig, run_dir: Path):
    """Export the trained audio encoder (SavedModel + Essentia graph) to ``export/<run name>``.

    A new version is written only when the run's checkpoints are newer than its latest export, so
    rerunning a finished run does not pile up identical versions. Returns the ExportResult or None.
    """
    from .export import existing_versions, export_run

    out = Path(cfg.export_dir) if cfg.export_dir else DEFAULT_EXPORTS / run_dir.name
    checkpoints = [p for p in (run_dir / "checkpoints").glob("*.weights.h5")]
    if not checkpoints:
        return None
    versions = existing_versions(out) if out.exists() else []
    if versions:
        latest = out / "saved_model" / str(max(versions))
        if latest.stat().st_mtime >= max(p.stat().st_mtime for p in checkpoints):
            print(f"[cmir_tf] export: {out.resolve()} version {max(versions)} is up to date")
            return None
    return export_run(run_dir, out)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, restart = config_from_args(argv)
        run_dir = train(cfg, restart=restart)
        print(f"[cmir_tf] run: {run_dir.resolve()} (config.json, history.csv, checkpoints/, logs/, curves.png)")
        if cfg.export:
            exported = export_after_training(cfg, run_dir)
            if exported:
                print(f"[cmir_tf] export: {Path(exported.saved_model_dir).resolve()} (TF Serving), "
                      f"{Path(exported.graph_path).resolve()} + .json (Essentia)")
    except (ConfigError, DataError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "training stopped" in str(exc):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
