"""The run folder of ``python -m cmir_tf.train``: the one place that names, writes and reads its files.

::

    RUN/config.json                 effective TrainConfig (keys = the flags with ``_``), sorted, indented
    RUN/model.json                  ContrastiveModel.get_config(): what export rebuilds the model from
    RUN/history.csv                 one row per epoch: epoch (counted from 1), loss, each part, val_loss,
                                    val_<part> (callbacks.HistoryCSV, Keras's CSVLogger; appended on resume)
    RUN/checkpoints/best.weights.h5 lowest val_loss so far (across resumes); weights only (no optimizer)
    RUN/checkpoints/last.weights.h5 end of the latest epoch (not kept with --no-keep-last once best exists)
    RUN/backup/weights.weights.h5   resumable state, rewritten every few steps and at each epoch end
                                      (weights only: the optimizer is in optimizer.npz):
    RUN/backup/optimizer.npz          the optimizer's variables as v00000, v00001, … (iterations first)
    RUN/backup/state.json             {"epoch", "step", "best_val_loss", "time"}: where to resume
                                      (epoch = epochs completed, step = steps done in the next one),
                                      + "loss_scale": {"scale", "good_steps"} under float16,
                                      + "weights_removed": true once a --no-keep-backup run completed
                                      (the other two files are then gone)
    RUN/logs/                       TensorBoard event files (Keras's TensorBoard callback)
    RUN/curves.png                  training / validation curves, one panel per loss
    RUN/workers/<i>/                the same layout for multi-worker task i ≠ chief (kept apart)
    RUN/previous/<UTC time>/        an earlier run's files, set aside by a restart (:meth:`RunDir.set_aside`)
    RUN/eval/                       evaluation reports of this run (``python -m cmir_tf.evaluate … --out
                                    RUN/eval``): report.json, gtzan.json, jamendo.json, playlists.json;
                                    export puts their figures in the model's published metadata

    RUN/.cmir-lock                  held by the training process writing here (``cmir_tf.lock``)

Every file written here goes through ``cmir_tf.fileio`` (temporary name, then rename), so a killed run
leaves the previous version of each file; :meth:`RunDir.open_for_training` deletes the temporary files
a killed run left. Reads raise :class:`~cmir_tf.errors.DataError` naming the file and what is wrong; a
damaged backup file is named with the reason.

Ownership: training writes only into a new or empty folder, or a run folder (one with ``config.json``,
or holding nothing but the names above) — :meth:`RunDir.create`; a restart moves the earlier run's
files into ``previous/`` and deletes nothing.

Runs written before ``model.json`` existed still export: :meth:`RunDir.model_config` then derives the
model's configuration from ``config.json`` and its prepared folder through the same mapping training
uses (``config.model_config``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

from cmir_tf.errors import ConfigError, DataError
from cmir_tf.fileio import (atomic_path, atomic_write_text, create_output_folder, read_json, remove_stale_temps,
                            why_not_a_file, write_json)
from cmir_tf.lock import LOCK_NAME

# config.json keys that must not change when a run is continued from its backup: the model's variables,
# the meaning of a step and what is trained depend on them, and config.json / model.json must go on
# describing the whole run (a run saved before a key existed has it at its TrainConfig default)
RESUME_KEYS = ("mode", "batch_size", "embed_dim", "num_heads", "data", "audio_pairs", "align", "mixup",
               "lambda_a2g", "lambda_a2p", "lambda_g2p", "lambda_audio", "precision", "lr", "weight_decay",
               "temperature", "dropout", "seed", "variant", "published_view",
               "random_val_crops")


@contextlib.contextmanager
def _damaged(path: Path):
    """A backup file that cannot be read → ``DataError`` naming it (a truncated or damaged copy)."""
    import zipfile

    try:
        yield
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(f"{path}: damaged backup file ({reason}); restore it, or start over with --restart "
                        "(the run's files are set aside in previous/)") from None


def _loss_scale(state: dict, path: Path) -> dict | None:
    """The backup's loss scale (``{"scale" > 0, "good_steps" ≥ 0}``), None without one."""
    value = state.get("loss_scale")
    if value is None:
        return None
    try:
        scale, good = float(value["scale"]), int(value["good_steps"])
    except (TypeError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: loss_scale must be {{'scale': number, 'good_steps': integer}}, got {value!r}") from exc
    if not (math.isfinite(scale) and scale > 0) or good < 0:
        raise DataError(f"{path}: loss_scale needs a finite scale > 0 and good_steps ≥ 0, got {value!r}")
    return {"scale": scale, "good_steps": good}


def _resolved(config: dict, key: str):
    """A strategy setting as the run uses it (``--mixup`` bare or 7 = the mode's 7), else the value."""
    if key not in ("mixup", "align", "audio_pairs"):
        return config.get(key)
    from cmir_tf.model.presets import resolve

    try:
        return getattr(resolve(config.get("mode"), align=config.get("align"), audio_pairs=config.get("audio_pairs"),
                               mixup=config.get("mixup")), key)
    except ConfigError:
        return config.get(key)


class RunDir:
    """A run folder (see the module docstring). ``os.fspath(run)`` is its path."""

    CONFIG, MODEL, HISTORY, CURVES, LOGS = "config.json", "model.json", "history.csv", "curves.png", "logs"
    CHECKPOINTS, BEST, LAST = "checkpoints", "best.weights.h5", "last.weights.h5"
    BACKUP, BACKUP_WEIGHTS, BACKUP_OPTIMIZER, BACKUP_STATE = "backup", "weights.weights.h5", "optimizer.npz", "state.json"
    WORKERS, EVAL, PREVIOUS = "workers", "eval", "previous"
    # what a run writes about itself, set aside by a restart (checkpoints first: export must never find
    # an earlier run's weights beside a new run's configuration)
    SET_ASIDE = (CHECKPOINTS, BACKUP, HISTORY, CURVES, LOGS, EVAL, WORKERS, MODEL, CONFIG)

    def __init__(self, path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.model_path = self.path / self.MODEL
        self.history_path = self.path / self.HISTORY
        self.curves_path = self.path / self.CURVES
        self.logs_dir = self.path / self.LOGS
        self.backup_dir = self.path / self.BACKUP

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def worker(self, task_id: int) -> "RunDir":
        """Where a non-chief worker writes its copies, so it cannot clobber the chief's files."""
        return RunDir(self.path / self.WORKERS / str(task_id))

    def identity(self) -> dict:
        """The run named without a local path: ``{"name": folder name, "config_sha256": of config.json}``."""
        import hashlib

        ident = {"name": Path(os.path.abspath(self.path)).name}
        try:
            ident["config_sha256"] = hashlib.sha256(self.config_path.read_bytes()).hexdigest()
        except OSError:
            pass
        return ident

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>`` (:attr:`BEST` or :attr:`LAST`)."""
        return self.path / self.CHECKPOINTS / name

    def checkpoints(self) -> list[Path]:
        """The checkpoints that exist, best first."""
        return [p for p in (self.checkpoint(self.BEST), self.checkpoint(self.LAST)) if p.exists()]

    # ------------------------------------------------------------------------------------ training
    def own_names(self) -> tuple[str, ...]:
        return (self.CONFIG, self.MODEL, self.HISTORY, self.CURVES, self.LOGS, self.CHECKPOINTS, self.BACKUP,
                self.WORKERS, self.EVAL, self.PREVIOUS, LOCK_NAME)

    def create(self) -> None:
        """Create the run folder: refused (``ConfigError``) if it is a file, or holds other files and no
        ``config.json`` (not a run folder: training must not write, or later delete, there)."""
        create_output_folder(self.path, self.own_names(), self.CONFIG, "a run folder")

    def set_aside(self) -> Path | None:
        """Move the files of the run held here (:data:`SET_ASIDE`) into ``previous/<UTC time>/``, so a
        restarted run starts clean: its history, curves, checkpoints, logs and reports never mix with the
        earlier run's, and nothing of the earlier run is lost. Returns that folder (None: nothing to move).
        Each file is moved by one rename, checkpoints first; a kill midway leaves the rest for the next
        restart."""
        present = [n for n in self.SET_ASIDE if os.path.lexists(self.path / n)]
        if not present:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target, n = self.path / self.PREVIOUS / stamp, 1
        while target.exists():
            n += 1
            target = self.path / self.PREVIOUS / f"{stamp}-{n}"
        try:
            target.mkdir(parents=True)
            for name in present:
                os.replace(self.path / name, target / name)
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot set the earlier run aside into {target} "
                              f"({e.strerror or e})") from None
        return target

    def open_for_training(self, effective: dict, restart: bool = False,
                          steps_per_epoch: int | None = None) -> Path | None:
        """Create the folder for a run of ``effective`` (a TrainConfig as a dict) and write ``config.json``.
        Returns where a restart set the earlier run aside (:meth:`set_aside`), else None.

        ``restart`` sets the earlier run aside (backup included). Continuing a backed-up (or checkpointed)
        run with a setting of :data:`RESUME_KEYS` changed (the model, batch, data, losses, optimizer,
        precision, seed, variant) is refused with a ``ConfigError`` naming the flags; so is a backup at or
        past the end of an epoch of ``steps_per_epoch`` steps (the rest of that epoch would be no step at all).
        """
        self.create()
        moved = self.set_aside() if restart else None
        self._count_epochs_from_one()
        for folder in (self.path, self.path / self.CHECKPOINTS, self.backup_dir):
            remove_stale_temps(folder)
        if self.config_path.exists() and (self.has_backup() or self.checkpoints()):  # checkpoints: export's input
            self._check_resumable(read_json(self.config_path, "run configuration"), effective)
        if steps_per_epoch is not None and self.has_backup():
            epoch, step = self.backup_position()
            if step >= steps_per_epoch:
                raise ConfigError(
                    f"{self.backup_dir / self.BACKUP_STATE}: the backup is at step {step} of epoch {epoch + 1}, but "
                    f"an epoch of this run has {steps_per_epoch} steps; give --steps-per-epoch above {step} to "
                    "finish that epoch, or --restart to set the run aside and start over")
        atomic_write_text(self.config_path, json.dumps(effective, indent=2, sort_keys=True))
        return moved

    def _count_epochs_from_one(self) -> None:
        """A ``history.csv`` of a run begun by an earlier cmir_tf (epochs counted from 0, Keras's way) is
        renumbered from 1 before the run continues, so its rows never mix the two conventions."""
        import csv

        if not self.history_path.is_file():
            return
        with open(self.history_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if len(rows) < 2 or not rows[0] or rows[0][0] != "epoch" or rows[1][0] != "0":
            return
        for row in rows[1:]:
            row[0] = str(int(row[0]) + 1)
        with atomic_path(self.history_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)

    def _check_resumable(self, previous, effective: dict) -> None:
        """``ConfigError`` when ``effective`` changes a :data:`RESUME_KEYS` setting of the backed-up run."""
        import dataclasses

        from cmir_tf.train.config import TrainConfig

        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        old = defaults | (previous if isinstance(previous, dict) else {})
        new = defaults | effective
        changed = sorted(k for k in RESUME_KEYS if old.get(k) != new.get(k) and _resolved(old, k) != _resolved(new, k))
        if changed:
            values = "; ".join(f"--{k.replace('_', '-')} {old.get(k)} there, {new.get(k)} here" for k in changed)
            raise ConfigError(f"{self.path}: holds a run with different {', '.join(changed)} ({values}); "
                              "use another run folder, or --restart to set it aside and start over")

    def write_model_config(self, config: dict) -> None:
        write_json(self.model_path, config, indent=2)

    def save_checkpoint(self, model, name: str) -> None:
        """The model's weights without the optimizer's (export and evaluation need none; a third the size)."""
        from cmir_tf.model.compat import save_model_weights

        with atomic_path(self.checkpoint(name)) as tmp:
            save_model_weights(model, tmp)

    def has_backup(self) -> bool:
        return (self.backup_dir / self.BACKUP_STATE).exists()

    def save_backup(self, model, epoch: int, step: int, best_val_loss: float) -> None:
        """Weights, optimizer variables, then the position (``state.json`` last: it says the rest is whole).

        ``optimizer.npz`` holds the update state (Adam's, ``iterations`` first) — under float16 that of
        the optimizer the loss scaling wraps — and ``state.json`` the loss scale, so a backup resumes
        in any precision (``cmir_tf.model.precision``)."""
        import numpy as np

        from cmir_tf.model.compat import save_model_weights
        from cmir_tf.model.precision import inner_optimizer, loss_scale_state

        variables = inner_optimizer(model.optimizer).variables
        opt_vars = {f"v{i:05d}": np.asarray(v) for i, v in enumerate(variables)}
        with atomic_path(self.backup_dir / self.BACKUP_WEIGHTS) as tmp_w, \
                atomic_path(self.backup_dir / self.BACKUP_OPTIMIZER) as tmp_o:
            save_model_weights(model, tmp_w)  # the optimizer's variables go to optimizer.npz only
            np.savez(tmp_o, **opt_vars)
        state = {"epoch": epoch, "step": step, "best_val_loss": best_val_loss, "time": time.time()}
        scale = loss_scale_state(model.optimizer)
        if scale is not None:
            state["loss_scale"] = scale
        write_json(self.backup_dir / self.BACKUP_STATE, state)

    def drop_backup_weights(self) -> None:
        """A completed run's ``--no-keep-backup``: mark ``state.json`` (``"weights_removed": true``), then
        delete the backup's weights and optimizer state. The state stays: a rerun knows the run is done."""
        state_path = self.backup_dir / self.BACKUP_STATE
        if not self.has_backup():
            return
        write_json(state_path, dict(read_json(state_path, "backup state"), weights_removed=True))
        for name in (self.BACKUP_WEIGHTS, self.BACKUP_OPTIMIZER):
            (self.backup_dir / name).unlink(missing_ok=True)

    def _read_state(self) -> dict:
        state_path = self.backup_dir / self.BACKUP_STATE
        state = read_json(state_path, "backup state")
        if not isinstance(state, dict) or not all(type(state.get(k)) is int and state[k] >= 0 for k in ("epoch", "step")):
            raise DataError(f"{state_path}: damaged backup state (needs integer epoch, step)")
        return state

    def backup_position(self) -> tuple[int, int]:
        """(epoch, step) where the backup resumes (``state.json``, checked)."""
        state = self._read_state()
        return state["epoch"], state["step"]

    def restore_backup(self, model) -> dict | None:
        """Load the backup into ``model`` (weights and optimizer); return its state, or None without one.
        A backup whose weights a completed run dropped (:meth:`drop_backup_weights`) loads nothing: its
        state says where the run ended."""
        if not self.has_backup():
            return None
        import numpy as np

        from cmir_tf.model.compat import load_model_weights
        from cmir_tf.model.precision import inner_optimizer, restore_loss_scale

        state_path = self.backup_dir / self.BACKUP_STATE
        state = self._read_state()
        if state.get("weights_removed") is True:
            return dict(state, best_val_loss=state.get("best_val_loss", math.inf))
        weights_path, optimizer_path = self.backup_dir / self.BACKUP_WEIGHTS, self.backup_dir / self.BACKUP_OPTIMIZER
        model.optimizer.build(model.trainable_variables)
        with _damaged(weights_path):
            load_model_weights(model, weights_path)  # the optimizer's state comes from optimizer.npz
        with _damaged(optimizer_path), np.load(optimizer_path, allow_pickle=False) as saved:
            values = [saved[k] for k in sorted(saved.files)]
        variables = inner_optimizer(model.optimizer).variables
        if len(values) != len(variables):
            raise DataError(f"{optimizer_path}: {len(values)} optimizer variables, model has {len(variables)}")
        for i, (var, value) in enumerate(zip(variables, values)):
            if tuple(value.shape) != tuple(var.shape) or value.dtype.kind not in "fiu":
                raise DataError(f"{optimizer_path}: optimizer variable v{i:05d} is {value.dtype} {value.shape}, the "
                                f"model's is {tuple(var.shape)}; restore the file, or discard the backup (restart the "
                                "run) to start over")
            var.assign(value)
        restore_loss_scale(model.optimizer, _loss_scale(state, state_path))
        state.setdefault("best_val_loss", math.inf)
        return state

    # ------------------------------------------------------------------------------------- reading
    def _read(self, path: Path, what: str):
        why = why_not_a_file(path)
        if why is not None:
            raise DataError(f"{path}: {why} ({what})")
        return read_json(path, what)

    def read_config(self) -> dict:
        """``config.json``, with ``data`` resolved (a relative prepared folder may be relative to the run)."""
        config = self._read(self.config_path, "run configuration")
        if not isinstance(config, dict) or "mode" not in config or "data" not in config:
            raise DataError(f"{self.config_path}: needs 'mode' and 'data' (prepared folder)")
        data = str(config["data"])
        if not os.path.isabs(data) and not os.path.isdir(data):
            data = os.path.join(self.path, data)
        return dict(config, data=data)

    def model_config(self) -> dict:
        """The model's configuration: ``model.json``, or (a run from before it existed) derived from
        ``config.json`` and the prepared folder it names, by ``config.model_config``."""
        if self.model_path.exists():
            config = self._read(self.model_path, "model configuration")
            if not isinstance(config, dict) or "mode" not in config:
                raise DataError(f"{self.model_path}: not a model configuration (needs 'mode')")
            return config
        from cmir_tf.data.prepared import PreparedFacts
        from cmir_tf.train.config import TrainConfig, model_config

        saved = self.read_config()
        return model_config(TrainConfig.from_saved(saved), PreparedFacts(saved["data"]))

    def weights_to_export(self) -> Path:
        """``checkpoints/best.weights.h5``, else ``last.weights.h5``."""
        found = self.checkpoints()
        if not found:
            raise DataError(f"{self.path / self.CHECKPOINTS}: no {self.BEST} or {self.LAST}: the run has not "
                            "completed an epoch yet" + (f" (earlier runs set aside by --restart are under "
                                                        f"{self.path / self.PREVIOUS})"
                                                        if (self.path / self.PREVIOUS).is_dir() else ""))
        return found[0]
