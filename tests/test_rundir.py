"""cmir_tf.train.rundir.RunDir: the run folder's names, config checks on resume, model.json and its fallback."""
import json

import numpy as np
import pytest

from cmir_tf.data.prepared import PreparedFacts
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.train.config import TrainConfig, model_config
from cmir_tf.train.rundir import RunDir


def _prepared(tmp_path, n_genres=7, cf_dim=300):
    data = tmp_path / "prepared"
    data.mkdir()
    np.save(data / "word2vec.npy", np.zeros((n_genres, 200), np.float32))
    (data / "manifest.json").write_text(json.dumps({"cf_dim": cf_dim, "counts": {"train": 4, "val": 1}}))
    (data / "vocab.json").write_text("[]")
    return data


def test_layout_names_are_the_documented_ones(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.config_path.name == "config.json" and run.model_path.name == "model.json"
    assert run.history_path.name == "history.csv" and run.curves_path.name == "curves.png"
    assert run.checkpoint(RunDir.BEST) == tmp_path / "r" / "checkpoints" / "best.weights.h5"
    assert run.checkpoint(RunDir.LAST) == tmp_path / "r" / "checkpoints" / "last.weights.h5"
    assert run.backup_dir == tmp_path / "r" / "backup" and run.logs_dir == tmp_path / "r" / "logs"
    assert run.worker(1).path == tmp_path / "r" / "workers" / "1"


def test_continuing_a_backed_up_run_with_another_model_is_refused(tmp_path):
    run = RunDir(tmp_path / "r")
    effective = {"mode": "contr_cf_g", "batch_size": 16, "embed_dim": 128, "num_heads": 4, "data": "d"}
    run.open_for_training(effective)
    assert json.loads(run.config_path.read_text())["mode"] == "contr_cf_g"
    (run.backup_dir).mkdir()
    (run.backup_dir / "state.json").write_text(json.dumps({"epoch": 1, "step": 0}))
    with pytest.raises(ConfigError, match="different batch_size, mode"):
        run.open_for_training(dict(effective, mode="contr_g", batch_size=8))
    run.open_for_training(dict(effective, mode="contr_g"), restart=True)  # restart discards the backup
    assert not run.backup_dir.exists()


def test_model_config_is_model_json_else_derived_from_config_json(tmp_path):
    data = _prepared(tmp_path, n_genres=7, cf_dim=120)
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    # a run from before model.json: config.json (possibly with fewer keys) + its prepared folder
    run.config_path.write_text(json.dumps({"mode": "contr_g", "data": str(data), "dropout": 0.3, "lambda_a2g": 2.0,
                                           "precision": "mixed_bfloat16", "epochs": 3}))
    derived = run.model_config()
    assert derived == model_config(TrainConfig(mode="contr_g", dropout=0.3, lambda_a2g=2.0, precision="mixed_bfloat16"),
                                   PreparedFacts(data))
    assert (derived["vocab_size"], derived["w2v_dim"], derived["cf_dim"]) == (7, 200, 120)
    assert derived["lambdas"] == [2.0, 1.0, 1.0] and derived["cnn_dtype"] == "mixed_bfloat16"
    run.write_model_config(dict(derived, embed_dim=64))
    assert run.model_config()["embed_dim"] == 64  # model.json wins


def test_reading_a_broken_run_names_the_file(tmp_path):
    run = RunDir(tmp_path / "nope")
    with pytest.raises(DataError, match=r"nope/config\.json: missing \(run configuration\)"):
        run.read_config()
    run.path.mkdir()
    run.config_path.write_text(json.dumps({"mode": "contr_g"}))
    with pytest.raises(DataError, match="needs 'mode' and 'data'"):
        run.read_config()
    with pytest.raises(DataError, match=r"checkpoints: no best\.weights\.h5 or last\.weights\.h5"):
        run.weights_to_export()
