"""The evaluation CLI (one task or all of them as one report), the report's tables, and the protocols end
to end through a real export and on what `synth` + `prepare` write."""
import dataclasses
import json

import numpy as np
import pytest
from downstream_data import FAST, NoiseEmbedder, SignalEmbedder, fake_model, gtzan, melon  # noqa: F401 (fixtures)

from cmir_tf import evaluate as ev
from cmir_tf.errors import ConfigError
from cmir_tf.evaluate import __main__ as evaluate_cli
from cmir_tf.evaluate.cache import EmbeddingCache, Model, model_fingerprint
from cmir_tf.evaluate.playlists import read_playlist_task
from cmir_tf.evaluate.report import write_report


def test_all_writes_tables_and_plots(gtzan, melon, tmp_path, monkeypatch, capsys):
    root, splits = gtzan
    layout, prepared = melon
    fakes = {"contr_cf_g": SignalEmbedder(), "noise": NoiseEmbedder()}
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, fakes[name], key=name))
    out = tmp_path / "report"
    assert ev.main(["all", "--models", "contr_cf_g=x", "noise=y", "--gtzan", str(root), "--gtzan-splits", str(splits),
             "--data", str(prepared), "--melon", layout.root, "--runs", "2", "--k", "10", "--quiet",
             "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Table 1: GTZAN" in md and "Table 3: Playlist" in md and "Table 2" not in md
    assert "| contr_cf_g |" in md and "75.29 ± 1.32" in md and "0.0085 / 0.0020" in md  # the paper beside ours
    report = json.loads((out / "report.json").read_text())
    assert report["gtzan"]["contr_cf_g"]["mean"] > report["gtzan"]["noise"]["mean"]
    assert report["playlists"]["contr_cf_g"]["ndcg"] > report["playlists"]["noise"]["ndcg"]
    for png in ("tasks.png", "embedding_map.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Table 1: GTZAN" in capsys.readouterr().out


def test_report_table2_layout(tmp_path):
    """Table 2 in the paper's column order (Genre, Mood, Instrument) with the paper's values beside ours."""
    def r(m):
        return {"mean": m, "std": 0.001, "runs": [m]}
    report = {"params": {"k": 100}, "jamendo": {
        "contr_g": {"genre": r(0.85), "moodtheme": r(0.73), "instrument": r(0.8)},
        "mine": {"genre": r(0.5), "instrument": r(0.6)}}}
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| Model | Genre | Mood | Instrument | Paper (Genre/Mood/Instrument) |" in md
    assert "| contr_g | 0.850 ± 0.001 | 0.730 ± 0.001 | 0.800 ± 0.001 | 0.847 / 0.732 / 0.797 |" in md
    assert "| mine | 0.500 ± 0.001 | — | 0.600 ± 0.001 | — |" in md
    assert json.loads((tmp_path / "report.json").read_text())["plots"] == [str(tmp_path / "tasks.png")]


def test_single_task_cli_prints_and_writes_json(gtzan, melon, tmp_path, monkeypatch, capsys):
    root, splits = gtzan
    layout, prepared = melon
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, SignalEmbedder(), key="sig"))
    assert ev.main(["gtzan", "--model", "m", "--gtzan", str(root), "--splits", str(splits), "--runs", "2", "--quiet",
             "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "gtzan.json").read_text())
    assert saved["params"]["runs"] == 2 and len(saved["result"]["runs"]) == 2
    assert f"GTZAN accuracy: {saved['result']['mean']:.2f} ± " in capsys.readouterr().out
    assert ev.main(["playlists", "--model", "m", "--data", str(prepared), "--melon", layout.root, "--k", "10", "--quiet",
             "--no-cache", "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "playlists.json").read_text())["result"]
    assert f"nDCG@10 {saved['ndcg']:.4f}" in capsys.readouterr().out
    assert not (tmp_path / "cache" / "sig" / "melon").exists()  # --no-cache wrote nothing


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_errors(tmp_path, capsys):
    # a model folder without a SavedModel (an ExportError): one line, exit code 2
    assert ev.main(["gtzan", "--model", str(tmp_path), "--gtzan", str(tmp_path), "--splits", str(tmp_path)]) == 2
    assert "no SavedModel" in _one_error_line(capsys)
    assert ev.main(["all", "--models", "a=" + str(tmp_path), "--gtzan", str(tmp_path)]) == 2
    assert "no SavedModel" in _one_error_line(capsys)
    with pytest.raises(ConfigError, match="--gtzan and --gtzan-splits go together"):
        evaluate_cli.flag_pair(evaluate_cli.build_arg_parser().parse_args(["all", "--models", "a=b", "--gtzan", "x"]), "gtzan",
                     "gtzan_splits", "--gtzan", "--gtzan-splits")
    with pytest.raises(SystemExit) as e:
        ev.main(["--help"])
    assert e.value.code == 0 and "gtzan,jamendo,playlists,all" in capsys.readouterr().out


def test_cli_errors_name_the_flag_or_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, SignalEmbedder(), key=name))
    assert ev.main(["all", "--models", "a=x", "--gtzan", str(tmp_path)]) == 2
    assert "--gtzan and --gtzan-splits go together" in _one_error_line(capsys)
    assert ev.main(["all", "--models", "a=x", "a=y", "--data", str(tmp_path), "--melon", str(tmp_path)]) == 2
    assert "model names must be unique" in _one_error_line(capsys)
    assert ev.main(["all", "--models", "a"]) == 2
    assert "--models: expected NAME=EXPORT_DIR" in _one_error_line(capsys)
    assert ev.main(["gtzan", "--model", "m", "--gtzan", str(tmp_path / "nope"), "--splits", str(tmp_path),
                    "--runs", "0"]) == 2
    assert "--runs must be at least 1" in _one_error_line(capsys)
    assert ev.main(["gtzan", "--model", "m", "--gtzan", str(tmp_path / "nope"), "--splits", str(tmp_path)]) == 2
    assert "nope: GTZAN folder does not exist" in _one_error_line(capsys)


def test_cli_unloadable_saved_model_is_one_line(gtzan, tmp_path, capsys):
    """A SavedModel that cannot be loaded fails at the first cache miss with an ExportError: one line, exit 2."""
    root, splits = gtzan
    broken = tmp_path / "exp" / "saved_model" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    assert ev.main(["gtzan", "--model", str(tmp_path / "exp"), "--gtzan", str(root), "--splits", str(splits),
                    "--quiet", "--no-cache"]) == 2
    assert "cannot load the SavedModel" in _one_error_line(capsys)


# ------------------------------------------------------------------- end to end through a real export
@pytest.mark.slow
def test_cli_through_an_exported_model(gtzan, melon, tmp_path, capsys):
    """`all` with --models NAME=EXPORT_DIR: the Embedder of a real export (a randomly initialised audio
    encoder) embeds GTZAN wavs (22050 Hz → 16 kHz) and Melon mels; the cache holds exactly its outputs,
    and a second run embeds nothing."""
    tf = pytest.importorskip("tensorflow")
    from cmir_tf import export
    from cmir_tf.embed import Embedder
    from cmir_tf.model.encoders import AudioEncoder

    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    enc = AudioEncoder()
    enc(tf.zeros([1, 256, 48]))
    export.export_model(enc, None, [], str(tmp_path / "exp"), version=1, name="rand")
    root, splits = gtzan
    layout, prepared = melon
    argv = ["all", "--models", f"rand={tmp_path / 'exp'}", "--gtzan", str(root), "--gtzan-splits", str(splits),
            "--data", str(prepared), "--melon", layout.root, "--runs", "1", "--k", "10", "--quiet",
            "--gtzan-max-iter", "50", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert ev.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    g, p = report["gtzan"]["rand"], report["playlists"]["rand"]
    assert g["embedded"] == 70 and p["embedded"] == p["n_test_songs"] + p["n_query_songs"]
    # 9 s at 16 kHz = 563 centred frames → 2 non-overlapping 256-frame patches per track
    assert g["n_train_instances"] == 40 * 2 and 0 <= g["mean"] <= 100
    assert 0 <= p["ndcg"] <= 1 and 0 <= p["map"] <= 1
    # the cached embeddings are the Embedder's own output for each file
    key = report["models"]["rand"]
    assert key == model_fingerprint(tmp_path / "exp")
    embedder = Embedder(str(tmp_path / "exp"))
    cache = EmbeddingCache(Model("rand", lambda path: pytest.fail("cache miss"), key), tmp_path / "cache", "gtzan")
    wav = root / "genres" / "jazz" / "jazz.00006.wav"
    np.testing.assert_allclose(cache(wav), embedder.embed_file(str(wav))[0], atol=1e-5)
    mel = layout.mel_path(read_playlist_task(prepared, layout.root)["test_ids"][0])
    cache = EmbeddingCache(Model("rand", lambda path: pytest.fail("cache miss"), key), tmp_path / "cache", "melon")
    np.testing.assert_allclose(cache(mel), embedder.embed_file(mel)[0], atol=1e-5)
    capsys.readouterr()
    assert ev.main(argv) == 0  # everything from the cache now
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["gtzan"]["rand"]["embedded"] == 0 and again["playlists"]["rand"]["embedded"] == 0
    assert again["gtzan"]["rand"]["runs"] == g["runs"] and again["playlists"]["rand"]["ndcg"] == p["ndcg"]


def test_playlists_on_the_shared_synthetic_melon(synth_melon, prepared_data, tmp_path):
    """The protocol reads what `synth` and `prepare` really write; genre-carrying embeddings beat random,
    and with only Melon given the report maps the test songs coloured by their major genre."""
    models = [fake_model(SignalEmbedder(), "signal"), fake_model(NoiseEmbedder(), "noise")]
    report = ev.evaluate_models(models, playlists=(prepared_data, synth_melon), out_dir=tmp_path,
                                params=dataclasses.replace(FAST, runs=1))
    good, noise = report["playlists"]["signal"], report["playlists"]["noise"]
    splits = json.loads((prepared_data / "splits.json").read_text())
    assert good["n_test_songs"] == len(splits["test"]) and good["n_playlists"] > 0
    # measured: nDCG@10 signal 0.47, noise 0.20, random 0.23
    assert good["ndcg"] > 1.5 * good["random"]["ndcg"] and good["ndcg"] > 1.5 * noise["ndcg"]
    assert (tmp_path / "embedding_map.png").is_file() and "Table 3" in (tmp_path / "report.md").read_text()

