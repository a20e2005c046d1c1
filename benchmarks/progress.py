"""Cost of the training progress display (``cmir_tf.train.progress.TrainingProgress``) per training step.

    python benchmarks/progress.py                 # both displays, 200k steps each
    python benchmarks/progress.py --steps 50000 --step-ms 281

Calls the callback's per-step hook as Keras does after every training step (with the logs Keras passes,
already on the host: ``StopOnNonFiniteLoss`` and ``ResumableBackup`` read the loss every step anyway)
and prints the mean time per step for the terminal bar (drawn at most every 0.5 s) and the plain lines
(a log file), and that time as a share of a training step of ``--step-ms`` milliseconds (default 281:
the paper's V100, 19 min an epoch of 519,273 songs at batch 128), and of a 10 ms step.
"""
from __future__ import annotations

import argparse
import io
import time


def per_step_seconds(tty: bool, steps: int) -> float:
    from cmir_tf.train.progress import TrainingProgress

    progress = TrainingProgress(1, steps, stream=io.StringIO(), tty=tty, interval=60.0, refresh=0.5)
    progress.on_epoch_begin(0)
    logs = {"loss": 1.0, "a2g": 0.3, "a2p": 0.3, "g2p": 0.4}
    start = time.perf_counter()
    for batch in range(steps):
        progress.on_train_batch_end(batch, logs)
    seconds = (time.perf_counter() - start) / steps
    progress.on_epoch_end(0, logs)
    return seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--step-ms", type=float, default=281.0)
    args = ap.parse_args(argv)
    for tty in (True, False):
        s = per_step_seconds(tty, args.steps)
        print(f"{'terminal bar' if tty else 'plain lines '}: {s * 1e6:6.2f} µs per step = "
              f"{100 * s / (args.step_ms / 1e3):.5f} % of a {args.step_ms:g} ms step, {100 * s / 0.01:.4f} % of a 10 ms step")


if __name__ == "__main__":
    main()
