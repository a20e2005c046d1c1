"""python -m cmir_tf.train on hostile folders and settings: every fault a user met is one line with its
exit code, never a traceback, a silently wrong loss, a deleted user file or two runs in one folder."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_runs import run_train

from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.train.config import TrainConfig, config_from_args
from cmir_tf.train.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--validation-steps", "1", "--no-export"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _copy(prepared_data, tmp_path) -> PreparedData:
    return PreparedData(shutil.copytree(prepared_data, tmp_path / "p"))


def _edit_manifest(data: PreparedData, **changes):
    manifest = json.loads(Path(data.manifest_path).read_text())
    manifest.update(changes)
    Path(data.manifest_path).write_text(json.dumps(manifest))
    return manifest


# ------------------------------------------------------------------------------ configuration values
@pytest.mark.parametrize("values, message", [
    ({"epochs": "three"}, "--epochs: must be an integer, got 'three'"),
    ({"batch_size": 8.5}, "--batch-size: must be an integer, got 8.5"),
    ({"lr": "fast"}, "--lr: must be a number, got 'fast'"),
    ({"mode": 3}, "--mode: must be a string, got 3"),
    ({"steps_per_epoch": True}, "--steps-per-epoch: must be an integer, got True"),
])
def test_config_file_values_of_the_wrong_type_are_named(tmp_path, values, message):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": "d", **values}))
    with pytest.raises(ConfigError) as info:
        config_from_args(["--config", str(config)])
    assert str(info.value) == message


@pytest.mark.parametrize("batch, replicas, n_val, message", [
    (1, 1, 30, "batch size 1 gives 1 example(s) per replica on 1 replica(s): mode contr_cf_g needs at least 2"),
    (2, 2, 30, "batch size 2 gives 1 example(s) per replica on 2 replica(s): mode contr_cf_g needs at least 2"),
    (8, 1, 1, "validation batch 1 gives 1 example(s) per replica on 1 replica(s)"),
])
def test_contrastive_batch_of_one_per_replica_is_refused(batch, replicas, n_val, message):
    from cmir_tf.train import Schedule

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Schedule.plan(TrainConfig(batch_size=batch), {"train": 240, "val": n_val}, replicas)
    assert Schedule.plan(TrainConfig(mode="bline_g", batch_size=batch), {"train": 240, "val": n_val}, replicas)
    assert Schedule.plan(TrainConfig(batch_size=2 * replicas), {"train": 240, "val": 30}, replicas).batch == 2 * replicas


# ------------------------------------------------------------------------------- the prepared folder
@pytest.mark.parametrize("counts, message", [
    ({"train": -5, "val": 30, "test": 30}, "counts of 'train' must be a non-negative integer, got -5"),
    ({"train": 240, "val": "30", "test": 30}, "counts of 'val' must be a non-negative integer, got '30'"),
    ([240, 30, 30], "counts must be an object"),
    ("BIG", r"counts 1000000000 train records, but the \d+ shard\(s\) of train/ hold \d+"),
    ("SMALL", r"counts 1 val records, but the \d+ shard\(s\) of val/ hold \d+"),
])
def test_manifest_counts_are_checked_against_the_shards(prepared_data, tmp_path, counts, message):
    data = _copy(prepared_data, tmp_path)
    real = data.read_manifest()["counts"]
    if counts == "BIG":
        counts = dict(real, train=10**9)
    elif counts == "SMALL":
        counts = dict(real, val=1)
    _edit_manifest(data, counts=counts)
    with pytest.raises(DataError, match=rf"^{data.manifest_path}: {message}"):
        data.check_trainable()


@pytest.mark.parametrize("content, message", [
    ("not json", "manifest is not valid JSON"), ("[1, 2]", "the manifest must be a JSON object")])
def test_manifest_that_is_not_an_object_is_named(prepared_data, tmp_path, content, message):
    data = _copy(prepared_data, tmp_path)
    Path(data.manifest_path).write_text(content)
    with pytest.raises(DataError, match=rf"^{data.manifest_path}: {message}"):
        data.check_trainable()


@pytest.mark.parametrize("fault", ["rows", "pickled", "columns"])
def test_word2vec_of_the_wrong_size_or_pickled_is_named(prepared_data, tmp_path, fault):
    data = _copy(prepared_data, tmp_path)
    w2v = np.load(data.word2vec_path)
    if fault == "rows":
        np.save(data.word2vec_path, w2v[:-3])
        message = rf"{len(w2v) - 3} rows, but vocab.json has {len(w2v)} genres"
    elif fault == "columns":
        np.save(data.word2vec_path, w2v[:, :20])
        message = r"20 columns, manifest.json says w2v_dim 200"
    else:
        np.save(data.word2vec_path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        message = "word2vec matrix holds Python objects"
    with pytest.raises(DataError, match=rf"^{data.word2vec_path}: {message}"):
        data.check_trainable()


def test_cf_dim_that_disagrees_with_the_records_is_named(prepared_data, tmp_path):
    data = _copy(prepared_data, tmp_path)
    _edit_manifest(data, cf_dim=8)
    with pytest.raises(DataError, match=r"train-00000-of-\d+\.tfrecord: records hold CF vectors of 300 values, but "
                                        r".*manifest\.json says cf_dim 8"):
        data.check_trainable()


def test_cli_reports_a_bad_manifest_in_one_line(prepared_data, tmp_path):
    data = _copy(prepared_data, tmp_path)
    _edit_manifest(data, counts=dict(data.read_manifest()["counts"], train=-5))
    result = run_train(["--data", data.root, "--out", str(tmp_path / "run"), *TINY], cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == (f"error: {data.manifest_path}: counts of 'train' must be a "
                                              "non-negative integer, got -5")


# ------------------------------------------------------------------------------------- the run folder
def test_out_that_is_a_file_or_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"file: exists and is not a folder"):
        RunDir(tmp_path / "file").open_for_training({"mode": "contr_g"})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paper.tex").write_text("mine")
    with pytest.raises(ConfigError, match=r"mine: not a run folder \(it holds paper\.tex\)"):
        RunDir(mine).open_for_training({"mode": "contr_g"}, restart=True)
    assert os.listdir(mine) == ["paper.tex"]
    # a folder holding only a run's own names is a run folder (e.g. another worker made workers/ first)
    (tmp_path / "mw" / "workers" / "1").mkdir(parents=True)
    RunDir(tmp_path / "mw").open_for_training({"mode": "contr_g"})


def test_restart_sets_the_earlier_run_aside_and_loses_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    run.backup_dir.mkdir()
    for name in (RunDir.BACKUP_STATE, RunDir.BACKUP_WEIGHTS, RunDir.BACKUP_OPTIMIZER, "my_notes.txt"):
        (run.backup_dir / name).write_text("{}")
    (run.backup_dir / "keep").mkdir()
    run.open_for_training({"mode": "contr_g"}, restart=True)
    assert not run.has_backup() and not run.backup_dir.exists()
    [previous] = (run.path / "previous").iterdir()
    assert sorted(os.listdir(previous / "backup")) == sorted(
        ["keep", "my_notes.txt", RunDir.BACKUP_STATE, RunDir.BACKUP_WEIGHTS, RunDir.BACKUP_OPTIMIZER])


def _backed_up_run(tmp_path):
    """A tiny compiled Keras model after one fit, and a run folder holding its backup (epoch 1, step 0)."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    run.save_backup(model, 1, 0, 0.5)
    return model, run


@pytest.mark.parametrize("victim", [RunDir.BACKUP_WEIGHTS, RunDir.BACKUP_OPTIMIZER, RunDir.BACKUP_STATE])
def test_a_truncated_backup_file_is_named(tmp_path, victim):
    model, run = _backed_up_run(tmp_path)
    assert run.restore_backup(model)["epoch"] == 1
    path = run.backup_dir / victim
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"^{path}: (damaged backup|backup state is not valid JSON)"):
        run.restore_backup(model)


# ------------------------------------------------------------------------------ real training runs
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_shard_during_training_is_named(prepared_data, tmp_path, damage):
    data = _copy(prepared_data, tmp_path)
    victim = Path(data.shard_files("train")[1])
    raw = bytearray(victim.read_bytes())
    if damage == "flip":
        raw[len(raw) // 3] ^= 0x01  # inside a record's data: its checksum no longer matches
        victim.write_bytes(bytes(raw))
    else:
        victim.write_bytes(bytes(raw[:-5000]))  # cut inside the last record: the count check cannot see it
        _edit_manifest(data)
    result = run_train(["--data", data.root, "--out", str(tmp_path / "run"), *TINY], cwd=tmp_path)
    line = _one_error_line(result.stderr)
    if damage == "truncate" and "truncated or damaged shard" in line:  # found before training started
        assert result.returncode == 2 and f"{victim}: truncated or damaged shard" in line
        return
    assert result.returncode == 2
    assert line.startswith(f"error: {victim}: damaged shard (") and "rerun prepare" in line


@pytest.mark.slow
def test_a_second_training_run_into_the_same_folder_is_refused(prepared_data, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    args = ["--data", str(prepared_data), "--out", str(out), "--epochs", "50", "--steps-per-epoch", "4",
            "--batch-size", "8", "--validation-steps", "1", "--backup-every", "2", "--no-export"]
    first = subprocess.Popen([sys.executable, "-m", "cmir_tf.train", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "backup" / "state.json").exists():  # the first run is training
            assert first.poll() is None and time.time() < deadline, "the first run ended before the test"
            time.sleep(0.2)
        second = run_train(args, cwd=tmp_path)
        assert second.returncode == 4
        line = _one_error_line(second.stderr)
        assert line.startswith(f"error: {out}: in use by process {first.pid} on ") and "cmir_tf.train" in line
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    with open(out / "backup" / "state.json") as f:
        assert json.load(f)["epoch"] >= 0  # the first run's files are whole


# ---------------------------------------------- issue 16: numbers checked before any work, by flag and mode
@pytest.mark.parametrize("args, message", [
    (["--mixup", "inf"], "--mixup: α must be finite and at most 1000"),
    (["--mixup", "1e39"], "--mixup: α must be finite and at most 1000"),
    (["--mixup", "nan"], "--mixup: α must be ≥ 0"),
    (["--lambda-a2g", "inf"], "--lambda-a2g: must be ≥ 0 and finite, got inf"),
    (["--lambda-g2p", "nan"], "--lambda-g2p: must be ≥ 0 and finite, got nan"),
    (["--lambda-a2p", "-1"], "--lambda-a2p: must be ≥ 0 and finite, got -1.0"),
    (["--mode", "ss", "--lambda-audio", "-0.5"], "--lambda-audio: must be ≥ 0 and finite, got -0.5"),
    (["--mode", "ss", "--lambda-audio", "inf"], "--lambda-audio: must be ≥ 0 and finite, got inf"),
    (["--weight-decay", "nan"], "--weight-decay: must be ≥ 0 and finite, got nan"),
    (["--weight-decay=-1e-4"], "--weight-decay: must be ≥ 0 and finite, got -0.0001"),
    (["--lr", "inf"], "--lr: must be > 0 and finite, got inf"),
    (["--temperature", "inf"], "--temperature: must be > 0 and finite, got inf"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 2147483647), got -1"),
    (["--seed", str(10**20)], f"--seed: must be an integer in [0, 2147483647), got {10**20}"),
    # a weight of a term the mode does not have would be silently ignored
    (["--lambda-audio", "0.5"], "--lambda-audio: mode contr_cf_g has no audio pairs (a2a term); drop the flag or "
                                "add --audio-pairs"),
    (["--mode", "contr_g", "--lambda-g2p", "2"], "--lambda-g2p: mode contr_g has no g2p term"),
    (["--mode", "ss", "--align", "", "--lambda-a2g", "2"], "--lambda-a2g: mode ss has no a2g or genre term"),
    (["--mode", "bline_cf", "--lambda-a2g", "2"], "--lambda-a2g: mode bline_cf has no a2g or genre term"),
    (["--mode", "contr_g", "--lambda-a2g", "0"], "every loss term of mode contr_g weighs 0: nothing to train"),
])
def test_numeric_flags_are_checked_before_any_work(args, message):
    with pytest.raises(ConfigError) as info:
        config_from_args(["--data", "d", *args])
    assert str(info.value).startswith(message), str(info.value)


def test_weights_the_mode_uses_are_accepted():
    cfg, _ = config_from_args(["--data", "d", "--mode", "bline_cf_g", "--lambda-a2g", "0.5", "--lambda-a2p", "2"])
    assert cfg.lambdas == (0.5, 2.0, 1.0)
    cfg, _ = config_from_args(["--data", "d", "--mode", "hybrid", "--lambda-audio", "0", "--mixup", "1000"])
    assert cfg.lambda_audio == 0 and cfg.preset().mixup == 1000
    cfg, _ = config_from_args(["--data", "d", "--audio-pairs", "artist", "--lambda-audio", "0.5", "--seed",
                               str(2**31 - 2)])
    assert cfg.lambda_audio == 0.5 and cfg.seed == 2**31 - 2


def test_cli_refuses_inf_mixup_in_one_line_before_training(tmp_path):
    result = run_train(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--mixup", "inf", *TINY],
                       cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith("error: --mixup: α must be finite and at most 1000")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes, named", [
    ({"mixup": 2.0}, "--mixup 7.0 there, 2.0 here"),
    ({"lambda_audio": 0.5}, "--lambda-audio 1.0 there, 0.5 here"),
    ({"lambda_a2g": 2.0, "lambda_g2p": 0.0}, "--lambda-a2g 1.0 there, 2.0 here; --lambda-g2p 1.0 there, 0.0 here"),
    ({"precision": "mixed_bfloat16"}, "--precision float32 there, mixed_bfloat16 here"),
    ({"weight_decay": 1e-4}, "--weight-decay 0.0 there, 0.0001 here"),
    ({"temperature": 0.2}, "--temperature 0.1 there, 0.2 here"),
    ({"seed": 3}, "--seed 0 there, 3 here"),
])
def test_resume_refuses_a_setting_that_changes_what_is_trained(tmp_path, changes, named):
    from dataclasses import asdict

    run = RunDir(tmp_path / "r")
    effective = asdict(TrainConfig(data="d", mode="aim_playlist", mixup=7.0))
    run.open_for_training(effective)
    run.backup_dir.mkdir()
    (run.backup_dir / "state.json").write_text(json.dumps({"epoch": 1, "step": 0}))
    before = run.config_path.read_text()
    with pytest.raises(ConfigError) as info:
        run.open_for_training(dict(effective, **changes))
    assert f"holds a run with different {', '.join(sorted(changes))} ({named}); " in str(info.value)
    assert run.config_path.read_text() == before  # config.json still describes the run
    run.open_for_training(dict(effective, epochs=12, validation_steps=3))  # more epochs, other validation: fine
    run.open_for_training(dict(effective, mixup=None))  # the mode's own α, 7, spelled otherwise: the same run


def test_resume_of_a_run_saved_before_a_key_existed_takes_its_default(tmp_path):
    run = RunDir(tmp_path / "r")
    old = {"mode": "contr_g", "batch_size": 16, "embed_dim": 128, "num_heads": 4, "data": "d"}  # no lambdas, seed…
    run.open_for_training(old)
    run.backup_dir.mkdir()
    (run.backup_dir / "state.json").write_text(json.dumps({"epoch": 1, "step": 0}))
    from dataclasses import asdict

    run.open_for_training(asdict(TrainConfig(data="d", mode="contr_g", batch_size=16)))


@pytest.mark.parametrize("step, steps", [(6, 6), (6, 3), (10**6, 20)])
def test_resume_at_or_beyond_an_epochs_end_is_refused_naming_file_and_flag(tmp_path, step, steps):
    run = RunDir(tmp_path / "r")
    run.open_for_training({"mode": "contr_g"})
    run.backup_dir.mkdir()
    state = run.backup_dir / "state.json"
    state.write_text(json.dumps({"epoch": 0, "step": step}))
    with pytest.raises(ConfigError) as info:
        run.open_for_training({"mode": "contr_g"}, steps_per_epoch=steps)
    assert str(info.value) == (
        f"{state}: the backup is at step {step} of epoch 1, but an epoch of this run has {steps} steps; "
        f"give --steps-per-epoch above {step} to finish that epoch, or --restart to set the run aside and start over")
    run.open_for_training({"mode": "contr_g"}, steps_per_epoch=step + 1)


@pytest.fixture(scope="module")
def one_epoch_run(prepared_data, tmp_path_factory):
    """A finished one-epoch run of 4 steps (its backup: epoch 1, step 0)."""
    out = tmp_path_factory.mktemp("h16run") / "run"
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "4",
                        "--batch-size", "8", "--validation-steps", "1", "--no-export", "--mode", "contr_g"],
                       cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("steps", ["3", "6"])
def test_resume_with_an_epoch_no_longer_than_the_backed_up_step_ends_not_hangs(one_epoch_run, prepared_data,
                                                                                tmp_path, steps):
    """Reproduces issue 16 (1): a run killed at step 6, rerun with --steps-per-epoch 3 or 6, never ended."""
    out = Path(shutil.copytree(one_epoch_run, tmp_path / "run"))
    state = out / "backup" / "state.json"
    state.write_text(json.dumps(dict(json.loads(state.read_text()), epoch=0, step=6)))
    config = (out / "config.json").read_text()
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", steps,
                        "--batch-size", "8", "--validation-steps", "1", "--no-export", "--mode", "contr_g"],
                       cwd=tmp_path, timeout=120)  # before the fix: no output, never ended
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == (
        f"error: {state}: the backup is at step 6 of epoch 1, but an epoch of this run has {steps} steps; "
        "give --steps-per-epoch above 6 to finish that epoch, or --restart to set the run aside and start over")
    assert (out / "config.json").read_text() == config


def test_num_heads_must_divide_the_attention_width_before_any_work(prepared_data, tmp_path):
    from cmir_tf.train import train

    cfg = TrainConfig(data=str(prepared_data), out=str(tmp_path / "run"), mode="contr_g", num_heads=3, epochs=1,
                      steps_per_epoch=1, batch_size=8, export=False)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert str(info.value) == ("--num-heads 3: must divide the genre encoder's attention width, the word2vec size "
                               f"200 of {prepared_data}; choose one of 1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 200")
    assert not (tmp_path / "run").exists()
    # a mode without the genre encoder has no attention: any head count is accepted
    TrainConfig(data=str(prepared_data), mode="contr_cf", num_heads=3).validate()


@pytest.mark.parametrize("where", ["file", "inside"])
def test_export_dir_that_is_a_file_is_refused_before_training(prepared_data, tmp_path, where, capsys):
    from cmir_tf.train import main

    (tmp_path / "f").write_text("mine")
    export = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    code = main(["--data", str(prepared_data), "--out", str(tmp_path / "run"), "--export-dir", str(export), *TINY[:-1]])
    assert code == 2 and not (tmp_path / "run").exists() and (tmp_path / "f").read_text() == "mine"
    detail = "is a file, not a folder" if where == "file" else f"{tmp_path / 'f'} is a file, not a folder"
    assert capsys.readouterr().err == f"error: --export-dir {export}: {detail}\n"


def test_non_finite_weights_are_never_saved_and_stop_the_run(tmp_path):
    """Issue 16 (2): --mixup inf left every loss finite (ln(2m − 1)) but 19 weight arrays NaN, saved with exit 0."""
    import keras

    from cmir_tf.train.callbacks import BestAndLast, ResumableBackup, StopOnNonFiniteLoss

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    run = RunDir(tmp_path / "run")
    run.open_for_training({"mode": "contr_g"})
    stopper = StopOnNonFiniteLoss()
    callbacks = [stopper, ResumableBackup(run, 2, 10, guard=stopper), BestAndLast(run, guard=stopper)]
    for cb in callbacks:
        cb.set_model(model)
    callbacks[1].on_train_batch_end(1, {"loss": 0.5})  # step 2: a finite model is backed up
    assert run.backup_position() == (0, 2)
    kernel = model.get_layer("dense").kernel
    kernel.assign(np.where(np.eye(3, 2) > 0, np.nan, kernel.numpy()))
    callbacks[1].on_train_batch_end(3, {"loss": 0.5})  # step 4: the loss is finite, a weight is not
    assert run.backup_position() == (0, 2) and model.stop_training
    assert stopper.failed == f"non-finite weights ({kernel.path}) at epoch 1, step 4; nothing of it was saved"
    assert kernel.path.endswith("dense/kernel")
    for cb in callbacks[1:]:
        cb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.4})
    assert run.backup_position() == (0, 2) and not run.checkpoints()


# ----------------------------------------- issue 16 (3): pair-pipeline records checked as strictly as shards
def _rewrite_records(path, edit):
    """Rewrite a shard with ``edit(record) → record`` of the same length, with valid checksums."""
    import tensorflow as tf

    records = [edit(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _nan_mel(record: bytes) -> bytes:
    from cmir_tf.data.tfrecords import parse_example_numpy

    mel = parse_example_numpy(record)["mel"]
    return record.replace(mel.tobytes(), np.full_like(mel, np.nan).tobytes())


def _genre_pairs_sharing_nothing(data: PreparedData) -> np.ndarray:
    """A train genre relation whose every group is two songs without a common genre."""
    import tensorflow as tf

    from cmir_tf.data.tfrecords import parse_example_numpy

    genres = {}
    for path in data.shard_files("train"):
        for r in tf.data.TFRecordDataset(path):
            ex = parse_example_numpy(r.numpy())
            genres[ex["song_id"]] = set(ex["genres"].tolist())
    free, rows = sorted(genres), []
    while free:
        a = free.pop(0)
        b = next((s for s in free if not genres[a] & genres[s]), None)
        if b is not None:
            free.remove(b)
            rows += [(len(rows), a), (len(rows), b)]
    return np.array(sorted(rows), np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["flip", "nan", "swap", "genre"])
def test_a_damaged_pair_record_stops_training_naming_the_file(prepared_data, tmp_path, fault):
    data = _copy(prepared_data, tmp_path)
    files, index = data.read_records_index("train")
    mode = "aim_genre" if fault == "genre" else "ss"
    if fault == "flip":  # a float16 mantissa bit in every training record: exit 0 before
        raw = {p: bytearray(Path(p).read_bytes()) for p in files}
        for _, shard, offset, length in index.tolist():
            raw[files[shard]][offset + length - 1000] ^= 0x01
        for p, content in raw.items():
            Path(p).write_bytes(bytes(content))
        expected = r"error: .*/train/train-\d+-of-\d+\.tfrecord: damaged record at byte \d+ \(its data checksum"
    elif fault == "nan":  # NaN mels with valid checksums: exit 0 and a NaN best.weights.h5 before
        for p in files:
            _rewrite_records(p, _nan_mel)
        expected = r"error: .*/train/train-\d+-of-\d+\.tfrecord: the record of song \d+ at byte \d+ holds non-finite"
    elif fault == "swap":  # every song's location moved to the next row: sorted rows, other songs' records
        index[:, 1:] = np.roll(index[:, 1:], 1, axis=0)
        np.save(data.pair_path("train", "records"), index)
        expected = rf"error: {data.pair_path('train', 'records')}: the row of song \d+ points at the record of song"
    else:  # a genre relation whose pairs share no genre: a traceback (exit 1) before
        np.save(data.pair_path("train", "genre"), _genre_pairs_sharing_nothing(data))
        expected = rf"error: {data.pair_path('train', 'genre')}: no pair of a batch of \d+ shares a genre"
    out = tmp_path / "run"
    result = run_train(["--data", data.root, "--out", str(out), "--mode", mode, *TINY], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.match(expected, _one_error_line(result.stderr)), result.stderr[-2000:]
    assert not (out / "checkpoints" / "best.weights.h5").exists()


@pytest.mark.parametrize("fault", ["shape", "strings"])
def test_an_optimizer_backup_array_of_the_wrong_shape_is_named(tmp_path, fault):
    model, run = _backed_up_run(tmp_path)
    path = run.backup_dir / RunDir.BACKUP_OPTIMIZER
    with np.load(path) as saved:
        arrays = dict(saved)
    kernel = next(k for k in sorted(arrays) if arrays[k].shape == (3, 2))
    arrays[kernel] = arrays[kernel].T if fault == "shape" else np.array([["a", "b"]] * 3)
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"^{path}: optimizer variable {kernel} is .* the model's is \(3, 2\); restore"):
        run.restore_backup(model)


_HANGS_ON_TEARDOWN = """
import sys, threading
from cmir_tf import cli
from cmir_tf.errors import DataError

class Iterator:  # stands for a tf.data iterator whose destructor waits for a worker that never returns
    def __del__(self):
        print("teardown reached", file=sys.stderr, flush=True)
        threading.Event().wait()

@cli.command(hard_exit=True)
def main(argv=None):
    it = Iterator()
    raise DataError("shard: damaged record")

if sys.argv[1] == "program":
    sys.exit(main())
print("returned", main([]), flush=True)
"""


@pytest.mark.parametrize("how", ["program", "library"])
def test_a_command_ending_on_an_error_leaves_before_a_teardown_that_would_hang(tmp_path, how):
    """train's error exit (cli.command(hard_exit=True)): a failed fit's tf.data iterator was destroyed
    while the error unwound and could deadlock (seen: one damaged-pair run in three hung after its error
    line). As a program the process leaves right after the line; called from Python the code returns."""
    script = tmp_path / "cmd.py"
    script.write_text(_HANGS_ON_TEARDOWN)
    if how == "library":  # main([]) returns the code; the hang comes from the frame freed after that
        proc = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=8)
        proc.kill()
        out, err = proc.communicate()
        assert "teardown reached" in err and "error: shard: damaged record" in err
        return
    result = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: shard: damaged record"
    assert "teardown reached" not in result.stderr
