"""python -m cmir_tf.train: configuration, run directory, resume after SIGKILL, errors, multi-worker."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_runs import run_train, signal_after_backup

from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.train.config import TrainConfig, config_from_args, load_config_file

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# configuration (no TensorFlow)


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.mode, cfg.batch_size, cfg.lr, cfg.temperature, cfg.dropout, cfg.num_heads, cfg.embed_dim) == (
        "contr_cf_g", 128, 1e-4, 0.1, 0.5, 4, 128)
    assert (cfg.lambda_a2g, cfg.lambda_a2p, cfg.lambda_g2p) == (1.0, 1.0, 1.0)


def test_flags_override_config_file_which_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("mode: contr_g\nbatch-size: 32\ntemperature: 0.2\ndata: somewhere\n")
    cfg, restart = config_from_args(["--config", str(yaml_file), "--batch-size", "16"])
    assert (cfg.mode, cfg.batch_size, cfg.temperature, cfg.data) == ("contr_g", 16, 0.2, "somewhere")
    assert cfg.epochs == TrainConfig().epochs and not restart
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"lr": 0.001, "data": "d", "dropout": 0.0}))
    cfg, _ = config_from_args(["--config", str(json_file), "--restart"])
    assert (cfg.lr, cfg.dropout, cfg.batch_size) == (0.001, 0.0, 128)


def test_embedded_default_trains_briefly_but_flags_still_win():
    cfg, _ = config_from_args([])
    assert cfg.data is None and cfg.epochs == 3 and cfg.batch_size == 64
    cfg, _ = config_from_args(["--epochs", "1"])
    assert cfg.epochs == 1


def test_bad_config_values_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"batchsize": 3}))
    with pytest.raises(ConfigError, match=r"bad\.json.*unknown key 'batchsize'"):
        load_config_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match=r"--temperature: must be > 0"):
        config_from_args(["--data", "x", "--temperature", "0"])
    with pytest.raises(ConfigError, match=r"--dropout"):
        config_from_args(["--data", "x", "--dropout", "1.5"])
    with pytest.raises(SystemExit):
        config_from_args(["--mode", "contr_everything"])


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--mode", "--epochs", "--steps-per-epoch", "--batch-size", "--lr", "--temperature",
                 "--dropout", "--seed", "--out", "--config", "--strategy", "--devices", "--restart", "--precision",
                 "--jit-compile", "--read-parallelism", "--parse-parallelism", "--input-threads", "--device-prefetch",
                 "--keep-last", "--no-keep-last", "--keep-backup", "--no-keep-backup"):
        assert flag in text


def test_gpu_flags_reach_the_configuration_and_bad_values_name_the_flag():
    cfg, _ = config_from_args(["--data", "d", "--precision", "mixed_float16", "--jit-compile", "on",
                               "--read-parallelism", "32", "--parse-parallelism", "12", "--input-threads", "16",
                               "--device-prefetch", "0"])
    assert (cfg.precision, cfg.jit_compile, cfg.read_parallelism, cfg.parse_parallelism, cfg.input_threads,
            cfg.device_prefetch) == ("mixed_float16", "on", 32, 12, 16, 0)
    cfg, _ = config_from_args(["--data", "d"])
    assert (cfg.jit_compile, cfg.read_parallelism, cfg.device_prefetch) == ("auto", None, 2)
    for flag, value in (("--read-parallelism", "0"), ("--parse-parallelism", "-1"), ("--input-threads", "0"),
                        ("--device-prefetch", "-1")):
        with pytest.raises(ConfigError, match=f"{flag}: must be ≥"):
            config_from_args(["--data", "d", flag, value])
    with pytest.raises(SystemExit):
        config_from_args(["--data", "d", "--jit-compile", "maybe"])


def test_bad_data_folder_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"no such folder"):
        PreparedData(tmp_path / "nope").check_trainable()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match=r"half: not a prepared folder, missing word2vec\.npy, vocab\.json"):
        PreparedData(tmp_path / "half").check_trainable()


def test_cli_reports_bad_data_without_traceback(tmp_path):
    result = run_train(["--data", str(tmp_path / "missing"), "--no-export"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"error: {tmp_path / 'missing'}: no such folder" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------
# a real (tiny) run


@pytest.fixture(scope="module")
def tiny_run(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "3",
                        "--batch-size", "16", "--validation-steps", "1", "--no-export"], cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_run_directory_holds_config_history_checkpoints_logs_and_curves(tiny_run):
    out, result = tiny_run
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "contr_cf_g" and config["batch_size"] == 16 and config["epochs"] == 2
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # counted from 1, as the console counts
    for column in ("loss", "val_loss", "a2g", "a2p", "g2p", "val_a2g", "val_a2p", "val_g2p"):
        assert np.isfinite(float(rows[-1][column])), column
    # the total is the sum of the three alignments (λ = 1)
    parts = sum(float(rows[0][k]) for k in ("a2g", "a2p", "g2p"))
    assert float(rows[0]["loss"]) == pytest.approx(parts, rel=1e-4)
    assert (out / "checkpoints" / "best.weights.h5").stat().st_size > 1_000_000
    assert (out / "checkpoints" / "last.weights.h5").stat().st_size > 1_000_000
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in result.stdout


@pytest.mark.slow
def test_rerun_of_a_finished_run_does_not_train_again(tiny_run, prepared_data):
    out, _ = tiny_run
    before = (out / "history.csv").read_text()
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "3",
                        "--batch-size", "16", "--validation-steps", "1", "--no-export"], cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already trained 2 epochs" in result.stdout
    assert "Skipping variable loading" not in result.stderr  # the backup's optimizer state loads whole
    assert (out / "history.csv").read_text() == before


@pytest.mark.slow
def test_changing_the_model_of_an_existing_run_is_refused(tiny_run, prepared_data):
    out, _ = tiny_run
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--mode", "contr_g", "--batch-size", "16", "--no-export"],
                       cwd=out.parent)
    assert result.returncode == 2
    assert "different mode" in result.stderr


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_naming_the_step(prepared_data, tmp_path):
    result = run_train(["--data", str(prepared_data), "--out", str(tmp_path / "nan"), "--epochs", "2",
                        "--steps-per-epoch", "3", "--batch-size", "8", "--validation-steps", "1",
                        "--lr", "1e30", "--no-export"], cwd=tmp_path)
    assert result.returncode == 3
    assert "non-finite loss" in result.stderr and "epoch 1, step" in result.stderr
    # the diverged weights were never backed up as a resumable state
    state = tmp_path / "nan" / "backup" / "state.json"
    assert not state.exists() or json.loads(state.read_text())["epoch"] == 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_from_the_backup(prepared_data, tmp_path):
    out = tmp_path / "killed"
    args = ["--data", str(prepared_data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "6",
            "--batch-size", "8", "--validation-steps", "1", "--backup-every", "2", "--no-export"]
    state_path = out / "backup" / "state.json"
    signal_after_backup(args, tmp_path, state_path, epoch=0, sig=signal.SIGKILL, timeout=300)
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 0 and 2 <= state["step"] < 6  # killed mid-epoch, after a backup
    with np.load(out / "backup" / "optimizer.npz", allow_pickle=False) as saved:
        iterations_at_kill = int(saved["v00000"])  # keras optimizers keep `iterations` first
    assert iterations_at_kill == state["step"]

    result = run_train(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {out} in epoch 1 after step {state['step']} of 6" in result.stdout
    assert "Skipping variable loading" not in result.stderr  # the optimizer state loads with nothing skipped
    with open(out / "history.csv", newline="") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [1, 2]  # each epoch once: nothing twice, nothing lost
    with np.load(out / "backup" / "optimizer.npz", allow_pickle=False) as saved:
        assert int(saved["v00000"]) == 2 * 6  # exactly the steps asked for: no step redone, none skipped


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_devices_train_under_mirrored_strategy(prepared_data, tmp_path):
    result = run_train(["--data", str(prepared_data), "--out", str(tmp_path / "mirrored"), "--devices", "2",
                        "--strategy", "mirrored", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
                        "--validation-steps", "1", "--no-export"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    assert (tmp_path / "mirrored" / "checkpoints" / "last.weights.h5").exists()


@pytest.mark.slow
def test_hybrid_with_genre_pairs_on_two_devices_survives_sigkill_and_exports_the_usual_encoder(
        prepared_data, tmp_path):
    """A pair preset through the whole CLI: MirroredStrategy on 2 logical CPUs, SIGKILL mid-epoch, resume
    (no step twice, none lost), history/model.json naming every term, and the export every mode gets."""
    out, export_dir = tmp_path / "hybrid", tmp_path / "exported"
    args = ["--data", str(prepared_data), "--out", str(out), "--mode", "hybrid", "--audio-pairs", "genre",
            "--devices", "2", "--strategy", "mirrored", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "8",
            "--validation-steps", "1", "--backup-every", "2", "--export-dir", str(export_dir)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "cmir_tf.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = out / "backup" / "state.json"
    try:
        deadline = time.time() + 600
        while not (state_path.exists() and json.loads(state_path.read_text())["step"] >= 2):
            assert proc.poll() is None and time.time() < deadline, "no mid-epoch backup before the run ended"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = json.loads(state_path.read_text())
    result = run_train(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    assert f"in epoch {state['epoch'] + 1} after step {state['step']} of" in result.stdout
    with np.load(out / "backup" / "optimizer.npz", allow_pickle=False) as saved:
        assert int(saved["v00000"]) == 2 * 4
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for term in ("a2g", "a2p", "g2p", "a2a_genre"):
        assert np.isfinite(float(rows[-1][term])) and np.isfinite(float(rows[-1]["val_" + term]))
    model = json.loads((out / "model.json").read_text())
    assert (model["mode"], model["audio_pairs"], model["align"], model["mixup"]) == (
        "hybrid", "genre", ["a2g", "a2p", "g2p"], 7.0)
    import tensorflow as tf

    served = tf.saved_model.load(str(export_dir / "saved_model" / "1"))
    assert set(served.signatures) == {"serving_default", "embed_waveform", "tag_genres"}
    out_spec = served.signatures["serving_default"].structured_outputs
    assert out_spec["embeddings"].shape.as_list() == [None, 128] and out_spec["features"].shape.as_list() == [None, 1024]
    from cmir_tf.export.exportdir import GENRES_SUFFIX

    meta_file, = [p for p in export_dir.glob("*.json") if not p.name.endswith(f"{GENRES_SUFFIX}.json")]
    meta = json.loads(meta_file.read_text())
    assert meta["schema"]["inputs"][0]["name"] == "melspectrogram"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["contr_cf_g", "aim_playlist"])  # aim_playlist: each worker its share of pairs
def test_multiworker_strategy_trains_with_two_local_workers(prepared_data, tmp_path, mode):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cmir_tf.train", "--data", str(prepared_data), "--out", str(tmp_path / "mw"),
             "--strategy", "multiworker", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
             "--validation-steps", "1", "--no-export", "--mode", mode],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "2 replica(s)" in outputs[0][0]
    assert (tmp_path / "mw" / "history.csv").exists()  # the chief's run directory
    assert ("a2a_playlist" in (tmp_path / "mw" / "history.csv").read_text()) == (mode == "aim_playlist")
    assert (tmp_path / "mw" / "workers" / "1").is_dir()  # the other worker wrote aside


@pytest.mark.slow
def test_bfloat16_run_exports_a_float32_encoder_at_the_end(prepared_data, tmp_path):
    out, export_dir = tmp_path / "bf16", tmp_path / "exported"
    args = ["--data", str(prepared_data), "--out", str(out), "--precision", "mixed_bfloat16", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "8", "--validation-steps", "1", "--export-dir", str(export_dir)]
    result = run_train(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["precision"] == "mixed_bfloat16"
    assert (export_dir / "saved_model" / "1" / "saved_model.pb").exists()
    assert "(TF Serving)" in result.stdout and "(Essentia)" in result.stdout
    # the end names every file the run and its export wrote, each that exists
    printed = {line.rsplit(": ", 1)[-1] for line in result.stdout.splitlines() if line.startswith("[cmir_tf] ")}
    written = {str(p.resolve()) for p in export_dir.glob("cmir-audio-encoder*")
               if p.suffix in (".pb", ".json", ".onnx", ".keras")}
    assert {p.rsplit("/", 1)[-1].split(".", 1)[-1] for p in written} >= {"pb", "json", "keras"}
    assert any(p.endswith("-genres.json") for p in written)  # contr_cf_g has the genre head
    assert written <= printed and str((export_dir / "saved_model" / "1").resolve()) in printed
    assert str((out / "checkpoints" / "best.weights.h5").resolve()) in {line.split("]", 1)[-1].strip()
                                                                          for line in result.stdout.splitlines()}
    from cmir_tf.export.exportdir import GENRES_SUFFIX

    meta_file, = [p for p in export_dir.glob("*.json") if not p.name.endswith(f"{GENRES_SUFFIX}.json")]
    meta = json.loads(meta_file.read_text())
    assert meta["inference"]["sample_rate"] == 16000
    # the exported graph computes in float32, whatever the training precision
    import tensorflow as tf

    served = tf.saved_model.load(str(export_dir / "saved_model" / "1")).signatures["serving_default"]
    assert served.structured_outputs["embeddings"].dtype == tf.float32
    # a rerun of the finished run neither retrains nor exports a duplicate version
    again = run_train(args, cwd=tmp_path)
    assert again.returncode == 0 and "is up to date" in again.stdout
    assert not (export_dir / "saved_model" / "2").exists()


@pytest.mark.slow
def test_float16_run_trains_with_xla_and_exports_a_float32_encoder(prepared_data, tmp_path):
    """--precision mixed_float16 on this CPU: XLA by default (auto), loss scale in the backup, the host's
    input parallelism recorded, a float32 export."""
    out, export_dir = tmp_path / "f16", tmp_path / "exported"
    result = run_train(["--data", str(prepared_data), "--out", str(out), "--precision", "mixed_float16", "--epochs",
                        "1", "--steps-per-epoch", "2", "--batch-size", "8", "--validation-steps", "1",
                        "--export-dir", str(export_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mixed_float16, XLA on" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == "mixed_float16" and config["read_parallelism"] >= 8
    assert config["input_threads"] >= 1 and config["parse_parallelism"] >= 1
    scale = json.loads((out / "backup" / "state.json").read_text())["loss_scale"]
    assert 0 < scale["scale"] <= 2.0**15 and scale["good_steps"] >= 0
    with open(out / "history.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))
    import tensorflow as tf

    served = tf.saved_model.load(str(export_dir / "saved_model" / "1")).signatures["serving_default"]
    assert served.structured_outputs["embeddings"].dtype == tf.float32
    embeddings = served(melspectrogram=tf.zeros([1, 256, 48]))["embeddings"]
    assert embeddings.dtype == tf.float32 and np.all(np.isfinite(embeddings.numpy()))
