"""Progress of a training run inside its epochs: :class:`TrainingProgress`, a Keras callback.

Shows the step, the rate (steps/s), the epoch's running loss (Keras's mean over the epoch's steps so
far), the time left in the epoch and in the run:

- on a terminal (stderr is a TTY): a tqdm bar redrawn in place, at most every ``refresh`` seconds;
- otherwise (a log file, a pipe, a batch system): one plain line each time another tenth of the epoch
  is done or ``interval`` seconds have passed, whichever comes first — a log gets a few lines per
  epoch, never carriage-return frames.

Every epoch ends with one line: its losses, validation losses and duration. Epochs count from 1 (as
everywhere in cmir_tf). The run's ETA counts the steps left (the rest of this epoch and the epochs
after it) at the rate measured since this process's first step, plus one validation pass per epoch
left at its measured duration.

Cost: per step one clock read and a comparison; drawing happens at most every ``refresh`` seconds
(``benchmarks/progress.py`` measures it; README "Training").
"""
from __future__ import annotations

import sys
import time

import keras


def hms(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (``--:--:--`` when unknown)."""
    if not seconds >= 0 or seconds == float("inf"):
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class TrainingProgress(keras.callbacks.Callback):
    """Live progress of ``epochs`` epochs of ``steps`` steps, starting in epoch ``first_epoch`` (0-based, as
    Keras passes it) after ``first_step`` steps already done (a resumed epoch).

    ``stream``: where to write (stderr); ``tty``: draw a bar in place (default: ``stream.isatty()``);
    ``interval``: seconds between plain lines at most; ``clock``: a monotonic clock (tests give their own).
    """

    def __init__(self, epochs: int, steps: int, *, first_epoch: int = 0, first_step: int = 0, stream=None,
                 tty: bool | None = None, interval: float = 60.0, refresh: float = 0.5, clock=time.monotonic):
        super().__init__()
        self.epochs, self.steps = epochs, steps
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval, self.refresh, self.clock = interval, refresh, clock
        self.epoch, self.offset = first_epoch, first_step
        self.step = first_step
        self.loss = float("nan")
        self.start = None  # clock at this process's first step
        self.done_here = 0  # steps timed since then
        self.val_seconds = self._test_start = 0.0  # the latest validation pass
        self.paused = 0.0  # seconds since this process's first step spent outside training steps
        self.next_draw = self.next_tenth = 0.0
        self.bar = None
        self.epoch_start = 0.0

    # ------------------------------------------------------------------------------------- keras hooks
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.step = self.offset
        self.epoch_start = self.clock()
        self.next_tenth = (self.step * 10 // self.steps + 1) * self.steps / 10
        self.next_draw = self.epoch_start + (self.refresh if self.tty else self.interval)
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, initial=self.step, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="step", file=self.stream, leave=False, dynamic_ncols=True,
                            mininterval=self.refresh, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {postfix}")

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if self.start is None:
            self.start = now
        else:
            self.done_here += 1  # steps timed: those after this process's first (its tracing)
        self.step = self.offset + batch + 1
        if now >= self.next_draw or (not self.tty and self.step >= self.next_tenth):
            self.loss = float((logs or {}).get("loss", float("nan")))
            self._draw(now)

    def on_test_begin(self, logs=None):
        self._test_start = self.clock()

    def on_test_end(self, logs=None):
        self.val_seconds = self.clock() - self._test_start
        if self.start is not None:
            self.paused += self.val_seconds

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.offset = 0
        logs = logs or {}
        losses = ", ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k != "learning_rate")
        self._print(f"[cmir_tf] epoch {epoch + 1}/{self.epochs} done in {hms(self.clock() - self.epoch_start)}: "
                    f"{losses}; run ETA {hms(self._run_eta(after_epoch=True))}")

    # ---------------------------------------------------------------------------------------- drawing
    def rate(self) -> float:
        """Training steps per second in this process (after its first step), nan before two steps."""
        elapsed = self.clock() - self.start - self.paused if self.start is not None else 0.0
        return self.done_here / elapsed if self.done_here and elapsed > 0 else float("nan")

    def _run_eta(self, after_epoch: bool = False) -> float:
        rate = self.rate()
        later = self.epochs - self.epoch - 1
        left = later * self.steps + (0 if after_epoch else self.steps - self.step)
        return left / rate + (later + (0 if after_epoch else 1)) * self.val_seconds if rate > 0 else float("nan")

    def status(self) -> str:
        """``step 30/60 (50 %), 2.10 step/s, loss 3.2134, epoch ETA 0:00:14, run ETA 0:05:12``."""
        rate = self.rate()
        epoch_eta = (self.steps - self.step) / rate if rate > 0 else float("nan")
        return (f"step {self.step}/{self.steps} ({100 * self.step // self.steps} %), {rate:.2f} step/s, "
                f"loss {self.loss:.4f}, epoch ETA {hms(epoch_eta)}, run ETA {hms(self._run_eta())}")

    def _draw(self, now: float) -> None:
        if self.tty:
            self.next_draw = now + self.refresh
            self.bar.update(self.step - self.bar.n)
            rate = self.rate()
            eta = (self.steps - self.step) / rate if rate > 0 else float("nan")
            self.bar.set_postfix_str(f"{rate:.2f} step/s, loss {self.loss:.4f}, epoch ETA {hms(eta)}, "
                                     f"run ETA {hms(self._run_eta())}")
            return
        self.next_draw = now + self.interval
        self.next_tenth = (self.step * 10 // self.steps + 1) * self.steps / 10
        self._print(f"[cmir_tf] epoch {self.epoch + 1}/{self.epochs} {self.status()}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)



def run_summary(cfg, schedule, counts: dict, run, *, jit: bool, first_epoch: int) -> str:
    """What will train, in one block printed at the start of a run (``cfg``: TrainConfig, ``schedule``:
    train.Schedule, ``counts``: examples per split)."""
    preset = cfg.preset()
    weights = {"a2g": cfg.lambda_a2g, "a2p": cfg.lambda_a2p, "g2p": cfg.lambda_g2p}
    terms = ", ".join(f"{t} (λ {weights[t]:g})" if t in weights else
                      (f"{t} (λ {cfg.lambda_audio:g})" if t == preset.intra_term else t) for t in preset.parts)
    unit = "pairs" if preset.audio_pairs else "songs"
    lines = [
        f"mode          {cfg.mode}: {terms}",
        f"audio pairs   {preset.audio_pairs or 'none'}",
        "mixup         " + (f"α {preset.mixup:g}, β 2" if preset.mixup else "off"),
        f"precision     {cfg.precision}, XLA {'on' if jit else 'off'}",
        f"replicas      {schedule.replicas} replica(s), {cfg.strategy} strategy",
        f"batch         {schedule.batch} rows (validation {schedule.val_batch})",
        f"steps         {schedule.steps} per epoch, validation {schedule.val_steps}",
        f"epochs        {first_epoch + 1}–{cfg.epochs} of {cfg.epochs}",
        f"data          {cfg.data} ({counts['train']} train / {counts['val']} val {unit})",
        f"input         {cfg.read_parallelism} shard reads, {cfg.parse_parallelism} parse calls, "
        f"{cfg.input_threads} threads, {cfg.device_prefetch} batch(es) prefetched per device",
        f"run folder    {run}",
    ]
    return "\n".join("[cmir_tf] " + line for line in ["training:"] + ["  " + x for x in lines])
