"""What a person watching a training run meets: live progress inside epochs, the start summary, a clean
``--restart``, no "Skipping variable loading" warning on resume, and the disk options (issue 22)."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_runs import run_train, signal_after_backup, train_env

from cmir_tf.errors import DataError
from cmir_tf.train.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
WARNING = "Skipping variable loading"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _drive(progress, clock, epochs, steps, seconds_per_step, val_seconds=0.0, first_epoch=0, first_step=0):
    """Call the Keras hooks as fit would, the loss of step s of epoch e being 10 - e - s / 100."""
    for epoch in range(first_epoch, epochs):
        offset = first_step if epoch == first_epoch else 0
        progress.on_epoch_begin(epoch)
        for batch in range(steps - offset):
            clock.now += seconds_per_step
            progress.on_train_batch_end(batch, {"loss": 10 - epoch - (offset + batch + 1) / 100})
        progress.on_test_begin()
        clock.now += val_seconds
        progress.on_test_end()
        progress.on_epoch_end(epoch, {"loss": 1.5, "val_loss": 2.25, "a2g": 0.5, "learning_rate": 1e-4})


def test_plain_progress_prints_a_line_each_tenth_with_rate_loss_and_both_etas():
    from cmir_tf.train.progress import TrainingProgress

    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(2, 20, stream=out, tty=False, interval=3600, clock=clock)
    _drive(progress, clock, epochs=2, steps=20, seconds_per_step=0.5, val_seconds=4.0)
    text = out.getvalue()
    assert "\r" not in text  # a log file gets lines, never redrawn frames
    lines = [line for line in text.splitlines() if " step " in line]
    assert len(lines) == 20  # every 2nd step (a tenth of 20) in each of the two epochs
    assert lines[0].startswith("[cmir_tf] epoch 1/2 step 2/20 (10 %), 2.00 step/s, loss 9.9800")
    # step 10 of epoch 1: 10 steps left here at 2 steps/s, then 20 steps (no validation timed yet)
    assert "step 10/20 (50 %), 2.00 step/s, loss 9.9000, epoch ETA 0:00:05, run ETA 0:00:15" in lines[4]
    # epoch 2: the rate leaves the validation out; the run ETA adds one validation of 4 s
    assert "step 10/20 (50 %), 2.00 step/s, loss 8.9000, epoch ETA 0:00:05, run ETA 0:00:09" in lines[14]
    assert lines[10].startswith("[cmir_tf] epoch 2/2 step 2/20 (10 %)")
    ends = [line for line in text.splitlines() if " done in " in line]
    assert ends == ["[cmir_tf] epoch 1/2 done in 0:00:14: loss 1.5000, val_loss 2.2500, a2g 0.5000; run ETA 0:00:14",
                    "[cmir_tf] epoch 2/2 done in 0:00:14: loss 1.5000, val_loss 2.2500, a2g 0.5000; run ETA 0:00:00"]


def test_plain_progress_of_a_long_epoch_prints_every_interval_and_counts_a_resumed_epoch_from_its_step():
    from cmir_tf.train.progress import TrainingProgress

    clock, out = Clock(), io.StringIO()
    # resumed in epoch 2 of 3 after step 600 of 1000 steps; 1 s per step, a line at most every 60 s
    progress = TrainingProgress(3, 1000, first_epoch=1, first_step=600, stream=out, tty=False, interval=60, clock=clock)
    _drive(progress, clock, epochs=2, steps=1000, seconds_per_step=1.0, first_epoch=1, first_step=600)
    lines = [line for line in out.getvalue().splitlines() if " step " in line]
    first = lines[0]
    assert first.startswith("[cmir_tf] epoch 2/3 step 660/1000 (66 %), 1.00 step/s")  # 60 s after the start
    assert "700/1000" in lines[1]  # the next tenth comes before the next 60 s
    assert "epoch ETA 0:05:40" in first and "run ETA 0:22:20" in first  # 340 s + 1000 s of epoch 3


def test_terminal_progress_redraws_one_bar_in_place_at_most_every_refresh():
    from cmir_tf.train.progress import TrainingProgress

    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(1, 200, stream=out, tty=True, refresh=0.5, clock=clock)
    _drive(progress, clock, epochs=1, steps=200, seconds_per_step=0.05)  # 10 s: at most 20 redraws
    text = out.getvalue()
    frames = text.count("\r")
    assert 5 <= frames <= 2 * 20 + 4  # tqdm writes a frame (and may clear it) per redraw
    assert "epoch 1/1" in text and "step/s" in text and "run ETA" in text and "loss 8.1" in text
    assert "epoch 1/1 done in 0:00:10" in text


def test_progress_costs_far_below_one_percent_of_a_training_step():
    """The callback's work per step, against the fastest step the paper reports: a V100 epoch of 19 min
    over 519,273 songs at batch 128 = 281 ms a step. benchmarks/progress.py prints the figures."""
    from cmir_tf.train.progress import TrainingProgress

    for tty in (False, True):
        progress = TrainingProgress(1, 10**6, stream=io.StringIO(), tty=tty, interval=60, refresh=0.5)
        progress.on_epoch_begin(0)
        logs = {"loss": 1.0}
        n = 20_000
        start = time.perf_counter()
        for batch in range(n):
            progress.on_train_batch_end(batch, logs)
        per_step = (time.perf_counter() - start) / n
        progress.on_epoch_end(0, logs)
        assert per_step < 0.01 * 0.281 / 10, (tty, per_step)  # a tenth of the 1 % budget, with room for load


def test_start_summary_names_mode_terms_pairs_mixup_precision_replicas_batch_steps_epochs_data_and_run():
    from cmir_tf.train import Schedule
    from cmir_tf.train.config import config_from_args
    from cmir_tf.train.progress import run_summary

    cfg, _ = config_from_args(["--data", "prep", "--mode", "contr_g", "--audio-pairs", "artist", "--mixup",
                               "--lambda-audio", "0.5", "--epochs", "4", "--out", "runs/x"])
    schedule = Schedule(batch=128, steps=37, val_batch=64, val_steps=3, replicas=2)
    text = run_summary(cfg, schedule, {"train": 2400, "val": 300}, "runs/x", jit=False, first_epoch=1)
    for expected in ("mode          contr_g: a2g (λ 1), a2a_artist (λ 0.5)", "audio pairs   artist",
                     "mixup         α 7, β 2", "precision     float32, XLA off", "replicas      2 replica(s), auto strategy",
                     "batch         128 rows (validation 64)", "steps         37 per epoch, validation 3",
                     "epochs        2–4 of 4", "data          prep (2400 train / 300 val pairs)", "run folder    runs/x"):
        assert expected in text, expected


# ----------------------------------------------------------------------------------- restart, disk
def _fake_run(path: Path, mode: str) -> RunDir:
    run = RunDir(path)
    run.open_for_training({"mode": mode})
    for name in (RunDir.BEST, RunDir.LAST):
        run.checkpoint(name).parent.mkdir(exist_ok=True)
        run.checkpoint(name).write_bytes(b"weights of " + mode.encode())
    run.history_path.write_text("epoch,loss\n1,2.0\n")
    run.curves_path.write_bytes(b"png")
    run.logs_dir.mkdir()
    run.backup_dir.mkdir()
    (run.backup_dir / RunDir.BACKUP_STATE).write_text(json.dumps({"epoch": 1, "step": 0}))
    return run


def test_restart_sets_every_file_of_the_earlier_run_aside_and_export_finds_no_checkpoint(tmp_path):
    old = _fake_run(tmp_path / "run", "contr_cf_g")
    (old.path / "eval").mkdir()
    (old.path / "eval" / "report.json").write_text("{}")
    run = RunDir(tmp_path / "run")
    moved = run.open_for_training({"mode": "ss"}, restart=True)
    assert moved.parent == run.path / "previous"
    assert sorted(os.listdir(run.path)) == ["config.json", "previous"]
    assert json.loads(run.config_path.read_text()) == {"mode": "ss"}
    assert (moved / "checkpoints" / "best.weights.h5").read_bytes() == b"weights of contr_cf_g"
    assert json.loads((moved / "config.json").read_text()) == {"mode": "contr_cf_g"}
    for name in ("history.csv", "curves.png", "logs", "backup/state.json", "eval/report.json"):
        assert (moved / name).exists(), name
    with pytest.raises(DataError, match=r"no best\.weights\.h5 or last\.weights\.h5: the run has not completed an "
                                        r"epoch yet \(earlier runs set aside by --restart are under .*previous\)"):
        run.weights_to_export()
    # a second restart keeps both earlier runs apart
    _fake_run(tmp_path / "run", "ss")
    second = RunDir(tmp_path / "run").open_for_training({"mode": "cm"}, restart=True)
    assert second != moved and len(os.listdir(run.path / "previous")) == 2


def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    return model


def test_checkpoints_hold_no_optimizer_and_keep_last_false_keeps_only_best(tmp_path):
    import h5py

    from cmir_tf.train.callbacks import BestAndLast

    model = _tiny_model()
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    keeper = BestAndLast(run, keep_last=False)
    keeper.set_model(model)
    keeper.on_epoch_end(0, {"val_loss": float("nan")})  # nothing to rank yet: `last` stands in
    assert run.checkpoints() == [run.checkpoint(RunDir.LAST)]
    keeper.on_epoch_end(1, {"val_loss": 2.0})
    assert run.checkpoints() == [run.checkpoint(RunDir.BEST)]
    with h5py.File(run.checkpoint(RunDir.BEST)) as f:
        assert "optimizer" not in f and "layers" in f


def test_a_completed_run_without_keep_backup_keeps_only_its_state(tmp_path):
    model = _tiny_model()
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    run.save_backup(model, 2, 0, 0.5)
    run.drop_backup_weights()
    assert sorted(os.listdir(run.backup_dir)) == ["state.json"]
    state = run.restore_backup(_tiny_model())
    assert (state["epoch"], state["step"], state["best_val_loss"], state["weights_removed"]) == (2, 0, 0.5, True)


# ------------------------------------------------------------------------------- real runs (slow)
@pytest.mark.slow
def test_kill_resume_finish_without_extra_files_then_restart_and_kill_leave_nothing_to_export(prepared_data, tmp_path):
    out = tmp_path / "run"
    state_path = out / "backup" / "state.json"
    common = ["--data", str(prepared_data), "--out", str(out), "--steps-per-epoch", "6", "--batch-size", "8",
              "--validation-steps", "1", "--backup-every", "2", "--no-export"]
    args = common + ["--epochs", "1", "--no-keep-last", "--no-keep-backup"]
    code, err = signal_after_backup(args, tmp_path, state_path, epoch=0, sig=signal.SIGINT)  # Ctrl-C
    assert code == 130 and f"interrupted: the same command resumes {out}" in err, err[-3000:]
    step = json.loads(state_path.read_text())["step"]
    resumed = run_train(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert WARNING not in resumed.stderr  # the optimizer state is restored with nothing skipped
    assert f"resuming {out} in epoch 1 after step {step} of 6" in resumed.stdout
    assert "[cmir_tf] epoch 1/1 step 6/6 (100 %)" in resumed.stderr and "epoch 1/1 done in" in resumed.stderr
    with open(out / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1]
    # done: no `last` copy, no backup weights; the state says the run is complete
    assert sorted(os.listdir(out / "checkpoints")) == ["best.weights.h5"]
    assert sorted(os.listdir(out / "backup")) == ["state.json"]
    state = json.loads(state_path.read_text())
    assert (state["epoch"], state["step"], state["weights_removed"]) == (1, 0, True)
    again = run_train(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained 1 epochs" in again.stdout and WARNING not in again.stderr
    more = run_train(common + ["--epochs", "2", "--no-keep-backup"], tmp_path)
    assert more.returncode == 2 and "--no-keep-backup" in more.stderr and "--restart" in more.stderr

    # a restart into another mode, killed before its first epoch ends: nothing of the earlier run remains
    old_best = (out / "checkpoints" / "best.weights.h5").read_bytes()
    signal_after_backup(common + ["--epochs", "1", "--mode", "contr_g", "--restart"], tmp_path, state_path, epoch=0)
    [previous] = (out / "previous").iterdir()
    assert (previous / "checkpoints" / "best.weights.h5").read_bytes() == old_best
    assert (previous / "history.csv").read_text().count("\n") == 2  # the header and the earlier run's epoch
    assert not (out / "history.csv").exists() or (out / "history.csv").read_text() == ""  # no epoch ended yet
    assert not (out / "checkpoints").exists() or not os.listdir(out / "checkpoints")
    exported = subprocess.run([sys.executable, "-m", "cmir_tf.export", "--run", str(out), "--out", str(tmp_path / "e")],
                              env=train_env(), capture_output=True, text=True, timeout=300)
    assert exported.returncode == 2 and "has not completed an epoch yet" in exported.stderr
    assert not (tmp_path / "e" / "saved_model").exists()


def test_a_history_counted_from_zero_by_an_earlier_version_is_renumbered_before_the_run_continues(tmp_path):
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    run.history_path.write_text("epoch,a2g,loss\n0,1.5,1.5\n1,1.25,1.25\n")
    run.open_for_training({"mode": "contr_g"})
    with open(run.history_path, newline="") as f:
        assert list(csv.reader(f)) == [["epoch", "a2g", "loss"], ["1", "1.5", "1.5"], ["2", "1.25", "1.25"]]
    run.open_for_training({"mode": "contr_g"})  # counted from 1 already: left as it is
    assert run.history_path.read_text().splitlines()[1].startswith("1,")


@pytest.mark.parametrize("keras_format", [False, True], ids=["weights_only", "with_optimizer"])
def test_restoring_a_backup_skips_nothing_and_the_optimizer_continues(tmp_path, keras_format):
    """No "Skipping variable loading for optimizer" on resume: the backup's weights file holds no optimizer
    variables (or, written by an earlier version with Keras's save_weights, they are not looked at), and
    optimizer.npz brings back the iterations and both Adam moments exactly."""
    import warnings

    model = _tiny_model()
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    run.save_backup(model, 0, 3, 0.5)
    if keras_format:  # a backup of an earlier version: Keras's own file, the optimizer inside
        model.save_weights(run.backup_dir / RunDir.BACKUP_WEIGHTS)
    import keras

    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.compile(optimizer="adam", loss="mse")  # its optimizer not built yet, as in train
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.restore_backup(fresh)
    assert not [w for w in caught if WARNING in str(w.message)]
    saved = [np.asarray(v) for v in model.optimizer.variables]
    restored = [np.asarray(v) for v in fresh.optimizer.variables]
    assert len(saved) == len(restored) and int(restored[0]) == int(model.optimizer.iterations) == 1
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fresh.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    assert int(fresh.optimizer.iterations) == 2  # the count continues


def test_a_run_folder_with_checkpoints_but_no_backup_refuses_another_mode(tmp_path):
    """Without --restart a run folder whose backup was deleted still holds the earlier run's checkpoints:
    training another mode there would leave them for export under the new mode's config.json."""
    from cmir_tf.errors import ConfigError

    run = _fake_run(tmp_path / "run", "contr_cf_g")
    for name in os.listdir(run.backup_dir):
        os.remove(run.backup_dir / name)
    with pytest.raises(ConfigError, match=r"different mode \(.*\); use another run folder, or --restart"):
        run.open_for_training({"mode": "ss"})
    assert json.loads(run.config_path.read_text()) == {"mode": "contr_cf_g"}
