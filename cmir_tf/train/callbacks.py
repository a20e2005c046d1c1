"""Keras callbacks of a training run, and its curves plot. Files are named and written by ``rundir.RunDir``.

- :class:`StopOnNonFiniteLoss` stops at the first non-finite training loss and records the epoch and
  step (Keras's TerminateOnNaN names neither); ``train`` then raises ``NonFiniteLossError``.
- :class:`ResumableBackup` backs up weights, optimizer state and the position within the epoch every
  ``every`` steps and at each epoch end, never after a non-finite loss nor with a non-finite weight
  (both it and :class:`BestAndLast` check the weights before each save through the stopper, which then
  stops the run).
- :class:`BestAndLast` keeps ``checkpoints/best.weights.h5`` (lowest ``val_loss``) and ``last.weights.h5``.
- :class:`HistoryCSV` appends one row per epoch to ``history.csv``, the epoch counted from 1.
- :func:`plot_curves` draws ``history.csv`` into ``curves.png``.

Epochs count from 1 everywhere a person reads them: the console ("epoch 3/10"), ``history.csv``'s
``epoch`` column, ``curves.png``'s axis and the resume message; ``backup/state.json``'s ``epoch`` is the
number of epochs completed (so a backup with ``"epoch": 2, "step": 40`` resumes in epoch 3 after its
40th step).

Imports keras at the top: ``cmir_tf.train.loop`` imports this module only when it trains.
"""
from __future__ import annotations

import csv
import math

import keras
import numpy as np

from cmir_tf.fileio import atomic_path
from cmir_tf.train.rundir import RunDir


def _finite_loss(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or bool(np.isfinite(float(loss)))


def non_finite_weight(model) -> str | None:
    """The name of the first variable of ``model`` holding a NaN or ±inf, or None when all are finite."""
    for variable in model.weights:
        if not np.isfinite(np.asarray(variable)).all():
            return variable.path if hasattr(variable, "path") else variable.name
    return None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop the run at the first non-finite loss, or at non-finite weights found before a save
    (:meth:`weights_finite`: a loss can stay finite while the weights are NaN, e.g. every embedding
    normalised from NaN); ``failed`` then names the epoch and step."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failed: str | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            self.failed = f"non-finite loss ({float(logs['loss'])}) at epoch {self.epoch + 1}, step {batch + 1}"
            self.model.stop_training = True

    def weights_finite(self, model, where: str) -> bool:
        """Whether every weight of ``model`` is finite; if not, stop the run naming the variable and ``where``."""
        if self.failed:
            return False
        bad = non_finite_weight(model)
        if bad:
            self.failed = f"non-finite weights ({bad}) at {where}; nothing of it was saved"
            model.stop_training = True
        return bad is None


class ResumableBackup(keras.callbacks.Callback):
    """Back up weights, optimizer state and position every ``every`` steps and at each epoch end.

    Keras's BackupAndRestore keeps only the weights and restarts the interrupted epoch from its first
    step with a fresh optimizer; this keeps Adam's moments and the step within the epoch, so a killed
    run resumes where its last backup was taken (``RunDir.restore_backup``). ``offset``: the steps of
    the current epoch done before this ``fit`` call (a resumed epoch); ``best``: the lowest finite
    ``val_loss`` so far, recorded with the backup.
    """

    def __init__(self, run: RunDir, every: int, steps_per_epoch: int, *, offset: int = 0, best: float = math.inf,
                 guard: StopOnNonFiniteLoss | None = None):
        super().__init__()
        self.run = run
        self.guard = guard or StopOnNonFiniteLoss()
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self.offset = offset
        self.best = best

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.offset + batch + 1
        if step % self.every == 0 and step < self.steps_per_epoch and _finite_loss(logs) and \
                self.guard.weights_finite(self.model, f"epoch {self.epoch + 1}, step {step}"):
            self.run.save_backup(self.model, self.epoch, step, self.best)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_loss(logs):  # never back up weights a diverged step produced
            return
        if not self.guard.weights_finite(self.model, f"the end of epoch {epoch + 1}"):
            return
        val = (logs or {}).get("val_loss")
        if val is not None and np.isfinite(val):
            self.best = min(self.best, float(val))
        self.offset = 0
        self.run.save_backup(self.model, epoch + 1, 0, self.best)


class BestAndLast(keras.callbacks.Callback):
    """checkpoints/best.weights.h5 (lowest val_loss so far, across resumes) and last.weights.h5.

    ``keep_last=False``: no ``last`` copy while a ``best`` exists (export takes ``best``); ``last`` is
    written only as long as no epoch has given a finite loss to rank, so a run always has a checkpoint.
    Nothing is saved while a weight is non-finite (``guard``: the run stops, exit code 3)."""

    def __init__(self, run: RunDir, best: float = math.inf, keep_last: bool = True,
                 guard: StopOnNonFiniteLoss | None = None):
        super().__init__()
        self.run = run
        self.best = best
        self.keep_last = keep_last
        self.guard = guard or StopOnNonFiniteLoss()

    def on_epoch_end(self, epoch, logs=None):
        if not self.guard.weights_finite(self.model, f"the end of epoch {epoch + 1}"):
            return  # a NaN model is never saved
        val = (logs or {}).get("val_loss", (logs or {}).get("loss"))
        if val is not None and np.isfinite(val) and val < self.best:
            self.best = float(val)
            self.run.save_checkpoint(self.model, RunDir.BEST)
        if self.keep_last or not self.run.checkpoint(RunDir.BEST).exists():
            self.run.save_checkpoint(self.model, RunDir.LAST)
        else:
            self.run.checkpoint(RunDir.LAST).unlink(missing_ok=True)


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras's CSVLogger (appending) with the epoch counted from 1, as the console counts it."""

    def __init__(self, path):
        super().__init__(str(path), append=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def plot_curves(history_csv, out_png) -> None:
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
    epochs = [int(r["epoch"]) for r in rows]  # counted from 1 (HistoryCSV)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, [float(r[name]) for r in rows], "o-", label="train")
        if f"val_{name}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{name}"]) for r in rows], "s--", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    try:
        fig.tight_layout()
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
