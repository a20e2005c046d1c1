"""Model-zoo files of an export (cmir_tf.export.zoo): metadata as the Essentia zoo's, ONNX, genre head, Keras file.

One export of a freshly built model (trained-looking BatchNorm statistics, so inference mode matters)
is shared by the tests; every consumer (onnxruntime, Essentia, Keras in a fresh process) is compared
with the SavedModel's signatures.
"""
import datetime
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cmir_tf import constants as C  # noqa: E402
from cmir_tf import export as E  # noqa: E402
from cmir_tf.errors import ConfigError, ExportError  # noqa: E402
from cmir_tf.export import formats  # noqa: E402
from cmir_tf.export import reports  # noqa: E402
from cmir_tf.export import zoo  # noqa: E402
from cmir_tf.model.encoders import AudioEncoder, GenreEncoder  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N_GENRES = 5
VOCAB = [{"index": i, "code": f"GN0{i + 1}00", "name": f"genre {i}"} for i in range(N_GENRES)]
ATOL = 1e-4

# The keys and value types of the Essentia model zoo's metadata files (e.g. msd-musicnn-1.json,
# discogs-effnet-bs64-1.json): every zoo file has all of them.
ZOO_KEYS = {"name": str, "type": str, "link": str, "version": str, "description": str, "author": str,
            "email": str, "release_date": str, "framework": str, "framework_version": str, "classes": list,
            "model_types": list, "dataset": dict, "schema": dict, "citation": str, "inference": dict}
ZOO_DATASET_KEYS = {"name": str, "citation": str, "size": str, "metrics": dict}


def _randomise_batch_norm(layer, rng):
    for w in layer.weights:
        if "moving_mean" in w.path or w.path.endswith("beta"):
            w.assign(rng.normal(0, 0.3, size=w.shape).astype("float32"))
        elif "moving_variance" in w.path or w.path.endswith("gamma"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))


def _mel_patches(n, seed):
    return np.random.default_rng(seed).normal(-40, 15, size=(n, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")


def _run_child(script, *args, timeout=300, env=None):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def encoders():
    rng = np.random.default_rng(7)
    audio = AudioEncoder(dropout=0.5)
    audio(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]))
    _randomise_batch_norm(audio, rng)
    genre = GenreEncoder(rng.normal(size=(N_GENRES, C.W2V_DIM)).astype("float32"), dropout=0.5)
    genre(tf.zeros([1, C.MAX_GENRES], tf.int32), tf.ones([1, C.MAX_GENRES], tf.bool))
    return audio, genre


@pytest.fixture(scope="module")
def exported(encoders, tmp_path_factory):
    pytest.importorskip("tf2onnx", reason='the ONNX extra (pip install -e ".[onnx]") is part of [test]')
    audio, genre = encoders
    out = tmp_path_factory.mktemp("zoo_export")
    res = E.export_model(audio, genre, VOCAB, str(out), name="enc", options=zoo.ZooOptions(onnx=True))
    return out, res


@pytest.fixture(scope="module")
def saved_model(exported):
    out, _ = exported
    return tf.saved_model.load(str(out / "saved_model" / "1"))


@pytest.fixture(scope="module")
def real_audio_mel(tmp_path_factory):
    """Mel patches of a real compressed file: 9 s of a synthetic A-major chord as Ogg Vorbis at 22.05 kHz,
    decoded and analysed by cmir_tf's front end (the path `embed` and `embed_waveform` take)."""
    sf = pytest.importorskip("soundfile", reason="soundfile (test extra) writes the ogg file")
    from cmir_tf.audio import decoding as audio
    from cmir_tf.audio import frontend

    rate = 22050
    t = np.arange(int(9.0 * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * (k + 1) * t) / (k + 1) for f in (220.0, 277.18, 329.63) for k in range(3))
    x = 0.25 * chord / np.abs(chord).max() * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t) ** 2)
    x += 0.01 * np.random.default_rng(3).normal(size=t.size)
    path = tmp_path_factory.mktemp("audio") / "chord.ogg"
    sf.write(str(path), x.astype(np.float32), rate, format="OGG", subtype="VORBIS")
    wave = audio.load_audio(path)
    patches = np.asarray(frontend.patches(frontend.melspectrogram(tf.constant(wave))))
    assert patches.shape == (2, C.PATCH_FRAMES, C.N_BANDS)  # 9 s → 564 frames → 2 patches
    assert np.isfinite(patches).all() and patches.max() > -60  # real signal, not the −200 dB floor
    return patches


# ------------------------------------------------------------------------------------------ metadata
def _check_zoo_shape(meta):
    for key, kind in ZOO_KEYS.items():
        assert isinstance(meta.get(key), kind), (key, meta.get(key))
    for key, kind in ZOO_DATASET_KEYS.items():
        assert isinstance(meta["dataset"].get(key), kind), (key, meta["dataset"].get(key))
    datetime.date.fromisoformat(meta["release_date"])
    assert meta["framework"] == "tensorflow" and meta["version"].isdigit()
    assert set(meta["model_types"]) <= {"frozen_model", "SavedModel", "onnx", "keras"}
    assert meta["link"] == "" or meta["link"].startswith(("http://", "https://"))
    assert meta["email"] == "" or "@" in meta["email"]
    assert isinstance(meta["inference"]["sample_rate"], int) and isinstance(meta["inference"]["algorithm"], str)
    for o in meta["schema"]["outputs"]:
        assert {"name", "type", "shape", "op", "output_purpose"} <= set(o)
    assert "@article{" in meta["citation"] and "10.1109/LSP.2021.3071082" in meta["citation"]
    assert "Signal Processing Letters" in meta["citation"] and "733--737" in meta["citation"]
    cit = meta["dataset"]["citation"]
    assert cit.startswith("@inproceedings{") and "Melon Playlist Dataset" in cit and "536--540" in cit
    assert "Bogdanov, Dmitry" in cit and "ICASSP" in cit


def test_encoder_metadata_has_the_zoo_keys_and_types_and_names_its_files(exported):
    out, res = exported
    meta = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    _check_zoo_shape(meta)
    assert meta["link"] == "" and meta["classes"] == []
    # an embedding extractor: no `embedding_model` (in the zoo that is a head's pointer to its extractor)
    assert "embedding_model" not in meta["inference"]
    assert meta["inference"]["melspectrogram"]["number_bands"] == 48  # our own key for the front end
    assert [o["output_purpose"] for o in meta["schema"]["outputs"]] == ["embeddings", ""]
    assert meta["model_types"] == ["frozen_model", "SavedModel", "onnx", "keras"]
    files = meta["cmir_tf"]["files"]
    assert files == {"frozen_model": "enc.pb", "SavedModel": "saved_model/1", "onnx": "enc.onnx",
                     "keras": "enc.keras", "genres_head": "enc-genres.pb"}
    for rel in files.values():
        assert (out / rel).exists(), rel
    assert res.onnx_path == str(out / "enc.onnx") and res.keras_path == str(out / "enc.keras")
    assert res.genres_graph_path == str(out / "enc-genres.pb") and res.notes == ()


def test_genre_head_metadata_points_at_the_encoder_the_zoo_way(exported):
    out, _ = exported
    meta = json.loads((out / "enc-genres.json").read_text(encoding="utf-8"))
    _check_zoo_shape(meta)
    assert meta["name"] == "enc-genres" and meta["classes"] == [v["name"] for v in VOCAB]
    assert meta["inference"]["embedding_model"] == {"algorithm": "TensorflowPredict2D", "model_name": "enc",
                                                    "link": ""}
    (inp,) = meta["schema"]["inputs"]
    (outp,) = meta["schema"]["outputs"]
    assert inp == {"name": "embeddings", "type": "float", "shape": [128]}
    assert outp["name"] == "predictions" and outp["shape"] == [1, N_GENRES]
    assert outp["output_purpose"] == "predictions"
    assert meta["model_types"] == ["frozen_model", "onnx"] and meta["dataset"]["metrics"] == {}
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((out / "enc-genres.pb").read_bytes())
    nodes = {n.name: n for n in graph.node}
    assert nodes["embeddings"].op == "Placeholder"
    assert [d.size for d in nodes["embeddings"].attr["shape"].shape.dim] == [-1, 128]
    assert "predictions" in nodes and not [k for n in graph.node for k in n.attr if k in ("grad_a", "grad_b")]


def test_links_author_email_options_and_their_validation():
    opts = zoo.ZooOptions(link_base="https://models.example.org/cmir/", author="A. Person", email="a@example.org")
    enc = zoo.encoder_metadata("enc", 3, embed_dim=128, feature_dim=1024, options=opts)
    head = zoo.genre_head_metadata("enc", 3, ["rock", "pop"], embed_dim=128, options=opts)
    assert enc["link"] == "https://models.example.org/cmir/enc.pb"
    assert head["link"] == "https://models.example.org/cmir/enc-genres.pb"
    assert head["inference"]["embedding_model"]["link"] == enc["link"]
    assert (enc["author"], enc["email"]) == ("A. Person", "a@example.org") == (head["author"], head["email"])
    with pytest.raises(ConfigError, match="--link-base"):
        zoo.ZooOptions(link_base="models/cmir")
    with pytest.raises(ConfigError, match="--email"):
        zoo.ZooOptions(email="nobody")
    with pytest.raises(ExportError, match=r"cmir_tf\.run_dir holds a local path"):
        zoo.encoder_metadata("enc", 1, embed_dim=128, feature_dim=1024, extra={"run_dir": "/home/me/runs/x"})


def test_dataset_size_is_a_plain_string_from_the_manifest():
    manifest = {"counts": {"train": 416000, "val": 52000, "test": 52000}, "stats": {"playlists": 148826}}
    assert zoo.dataset_size(manifest) == "520,000 songs (train 416,000, val 52,000, test 52,000), 148,826 playlists"
    assert zoo.dataset_size({"counts": {"train": 3}}) == "3 songs"
    assert zoo.dataset_size(None) == "" and zoo.dataset_size({"counts": {"train": "x"}}) == ""
    info = zoo.dataset_info(manifest, {"GTZAN accuracy": 0.7})
    assert info["name"] == "Melon Playlist Dataset" and info["metrics"] == {"GTZAN accuracy": 0.7}


def test_no_file_of_an_export_names_a_local_path(exported):
    out, _ = exported
    needles = [str(out).encode(), b".export-tmp-", os.path.dirname(str(out)).encode()]
    blobs = []
    for root, _, files in os.walk(out):
        for f in files:
            path = os.path.join(root, f)
            if f.endswith(".keras"):
                with zipfile.ZipFile(path) as z:
                    blobs += [(f"{path}:{n}", z.read(n)) for n in z.namelist()]
            with open(path, "rb") as fh:
                blobs.append((path, fh.read()))
    for where, data in blobs:
        for needle in needles:
            assert needle not in data, (where, needle)


# ---------------------------------------------------------------------------------------------- ONNX
def _ort(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_encoder_equals_saved_model_on_random_and_real_audio_mels(exported, saved_model, real_audio_mel):
    import onnx

    out, _ = exported
    model = onnx.load(str(out / "enc.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == formats.ONNX_OPSET == 13
    meta = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    sess = _ort(out / "enc.onnx")
    (inp,) = sess.get_inputs()
    assert inp.name == meta["schema"]["inputs"][0]["name"] == "melspectrogram"
    assert inp.shape == ["batch", 256, 48]  # batch dimension dynamic
    assert [o.name for o in sess.get_outputs()] == [o["name"] for o in meta["schema"]["outputs"]]
    for mel in (_mel_patches(5, 11), _mel_patches(1, 12), real_audio_mel):
        got = dict(zip(["embeddings", "features"], sess.run(["embeddings", "features"], {"melspectrogram": mel})))
        want = saved_model.signatures["serving_default"](melspectrogram=tf.constant(mel))
        for key in ("embeddings", "features"):
            assert got[key].shape == (len(mel), want[key].shape[-1])
        np.testing.assert_allclose(got["embeddings"], want["embeddings"].numpy(), atol=ATOL, rtol=0)
        # `features` (pre-FFB activations, |x| up to ~15 here): float32 rounding scales with the values
        scale = max(1.0, float(np.abs(want["features"].numpy()).max()))
        np.testing.assert_allclose(got["features"], want["features"].numpy(), atol=ATOL * scale, rtol=0)


def test_onnx_genre_head_equals_tag_genres(exported, saved_model, real_audio_mel):
    out, _ = exported
    emb = saved_model.signatures["serving_default"](melspectrogram=tf.constant(real_audio_mel))["embeddings"]
    (scores,) = _ort(out / "enc-genres.onnx").run(["predictions"], {"embeddings": emb.numpy()})
    want = saved_model.signatures["tag_genres"](melspectrogram=tf.constant(real_audio_mel))["scores"].numpy()
    np.testing.assert_allclose(scores, want, atol=ATOL, rtol=0)


def test_without_the_onnx_extra_everything_else_is_written_and_stale_files_go(encoders, tmp_path, monkeypatch,
                                                                             capsys):
    audio, genre = encoders
    out = tmp_path / "export"
    E.export_model(audio, genre, VOCAB, str(out), name="enc", options=zoo.ZooOptions(onnx=True))
    assert (out / "enc.onnx").is_file() and (out / "enc-genres.onnx").is_file()
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the [onnx] extra were not installed
    assert formats.onnx_missing()
    with pytest.raises(ConfigError, match=r'--onnx: .*tf2onnx.*pip install -e "\.\[onnx\]"'):
        zoo.ZooOptions(onnx=True)  # asked for explicitly: refused before any work
    res = E.export_model(audio, None, [], str(out), name="enc")  # version 2, no genre encoder, no ONNX
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "ONNX" in x]
    assert "ONNX skipped" in line and 'pip install -e ".[onnx]"' in line
    assert res.version == 2 and res.onnx_path is None and res.genres_graph_path is None
    assert res.notes and "ONNX skipped" in res.notes[0]
    # the top-level files describe the newest version only: v1's ONNX and genre head are gone
    assert set(os.listdir(out)) == {"enc.pb", "enc.json", "enc.keras", "saved_model", ".cmir-export-files",
                                    ".cmir-lock"}
    meta = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    assert meta["version"] == "2" and meta["model_types"] == ["frozen_model", "SavedModel", "keras"]
    assert (out / "saved_model" / "1" / "assets" / "genres.txt").is_file()  # older versions stay


# ----------------------------------------------------------------------------------------- Essentia
@pytest.mark.slow
def test_essentia_runs_encoder_then_genre_head_like_tag_genres(exported, saved_model, real_audio_mel, tmp_path):
    sys.path.insert(0, HERE)
    essentia_ref = pytest.importorskip("essentia_ref")
    if not essentia_ref.essentia_available():
        pytest.skip("essentia-tensorflow is not installed (pip install -e .[test])")
    out, _ = exported
    enc = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    head = json.loads((out / "enc-genres.json").read_text(encoding="utf-8"))
    upstream = head["inference"]["embedding_model"]
    assert upstream["model_name"] == enc["name"]
    emb_out = [o["name"] for o in enc["schema"]["outputs"] if o["output_purpose"] == "embeddings"]
    mel = real_audio_mel.reshape(-1, C.N_BANDS)  # (512, 48): two patches of a real file
    (emb,) = essentia_ref.essentia_predict2d(out / f"{upstream['model_name']}.pb", mel,
                                             enc["schema"]["inputs"][0]["name"], emb_out, tmp_path / "enc",
                                             patch_size=enc["inference"]["patch_size"],
                                             patch_hop_size=enc["inference"]["patch_hop_size"], batch_size=2)
    (pred,) = essentia_ref.essentia_predict2d(out / "enc-genres.pb", emb, head["schema"]["inputs"][0]["name"],
                                              [head["schema"]["outputs"][0]["name"]], tmp_path / "head",
                                              patch_size=1, patch_hop_size=1)
    want = saved_model.signatures["tag_genres"](melspectrogram=tf.constant(real_audio_mel))
    assert pred.shape == (2, N_GENRES)
    np.testing.assert_allclose(pred, want["scores"].numpy(), atol=ATOL, rtol=0)
    assert [g.decode() for g in want["genres"].numpy()] == head["classes"]


# -------------------------------------------------------------------------------------------- Keras
def test_keras_file_opens_in_a_fresh_process_without_and_with_cmir_tf(exported, saved_model, tmp_path):
    out, _ = exported
    with zipfile.ZipFile(out / "enc.keras") as z:
        config = z.read("config.json").decode()
    assert "cmir_tf" not in config  # built-in layers only: no registered custom object to resolve
    mel = _mel_patches(3, 21)
    np.save(tmp_path / "mel.npy", mel)
    _run_child("""
        import sys
        import numpy as np
        keras_path, mel_path, out_path = sys.argv[1:]
        sys.modules["cmir_tf"] = None  # any import of cmir_tf now fails: the file must not need it
        import keras
        first = keras.saving.load_model(keras_path)
        a = first.predict(np.load(mel_path), verbose=0)
        del sys.modules["cmir_tf"]
        import cmir_tf  # noqa: F401 — and it still opens beside the package
        b = keras.saving.load_model(keras_path).predict(np.load(mel_path), verbose=0)
        assert first.input_shape == (None, 256, 48), first.input_shape
        np.savez(out_path, emb=a["embeddings"], feat=a["features"], emb2=b["embeddings"])
    """, out / "enc.keras", tmp_path / "mel.npy", tmp_path / "out.npz")
    got = np.load(tmp_path / "out.npz")
    want = saved_model.signatures["serving_default"](melspectrogram=tf.constant(mel))
    np.testing.assert_allclose(got["emb"], want["embeddings"].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["feat"], want["features"].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_array_equal(got["emb"], got["emb2"])


def test_keras_model_trains_like_the_encoder(encoders):
    audio, _ = encoders
    model = formats.keras_model(audio)
    names = {layer.name for layer in model.layers}
    assert {"input_bn", "conv0", "conv6_bn", "fc1", "fc1_bn", "dropout", "fc2", "ln"} <= names
    assert model.get_layer("dropout").rate == audio.dropout_rate
    assert model.get_layer("conv0_bn").momentum == audio.conv_bns[0].momentum
    with pytest.raises(ExportError, match="AudioEncoder"):
        formats.keras_model(lambda mel, training=False: (mel, mel))


# ------------------------------------------------------------------------------------------ metrics
def _report_results():
    """Results in the exact shapes cmir_tf.evaluate's protocols return (tiny synthetic inputs)."""
    from cmir_tf.evaluate.downstream import Params
    from cmir_tf.evaluate.gtzan import gtzan_protocol
    from cmir_tf.evaluate.jamendo import jamendo_protocol
    from cmir_tf.evaluate.playlists import playlist_protocol

    rng = np.random.default_rng(0)
    params = Params(runs=2, gtzan_max_iter=30, jamendo_max_epochs=2, progress=False)
    genres = ["blues", "rock"]

    def track(g):
        return rng.normal(genres.index(g) * 2.0, 1.0, size=(3, 8)).astype(np.float32)

    gtzan = gtzan_protocol([(track(g), g) for g in genres * 6], [(track(g), g) for g in genres * 3], params)
    data = {}
    for split, n in (("train", 24), ("validation", 8), ("test", 8)):
        tags = [["a"] if i % 2 else ["b"] for i in range(n)]
        data[split] = (rng.normal(size=(n, 8)).astype(np.float32), tags)
    jamendo = {"genre": jamendo_protocol(data, Params(runs=1, jamendo_max_epochs=2, progress=False))}
    vectors = {s: rng.normal(size=8).astype(np.float32) for s in range(40)}
    playlists = playlist_protocol([(1, [0, 1], [30, 31]), (2, [2], [32])], vectors, list(range(20, 40)),
                                  Params(k=10, n_trees=2, progress=False))
    return gtzan, jamendo, playlists


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    from cmir_tf.evaluate import Model
    from cmir_tf.evaluate import evaluation as EV

    gtzan, jamendo, playlists = _report_results()
    folder = tmp_path_factory.mktemp("reports")
    models = [Model("contr_g", None, "k1"), Model("contr_cf", None, "k2")]
    fakes = {"evaluate_gtzan_split": gtzan, "evaluate_jamendo_splits": jamendo, "evaluate_playlist_task": playlists}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EV, "read_datasets", lambda **k: {task: None for task in ("gtzan", "jamendo", "playlists")})
        for fn, result in fakes.items():
            mp.setattr(EV, fn, lambda *a, _r=result, **k: dict(_r))
        report = EV.evaluate_models(models, gtzan=("g", "s"), jamendo=("j", "s"), playlists=("p", "m"))
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    # a single-task run (`evaluate gtzan --out`), newer than report.json
    single = dict(gtzan, mean=50.0, std=2.0)
    (folder / "gtzan.json").write_text(json.dumps({"model": "x", "params": {}, "result": single}), encoding="utf-8")
    stamp = os.stat(folder / "report.json").st_mtime_ns
    os.utime(folder / "gtzan.json", ns=(stamp + 10**9, stamp + 10**9))
    return folder, gtzan, jamendo, playlists


def test_metrics_come_from_the_runs_evaluation_report(report_files):
    folder, gtzan, jamendo, playlists = report_files
    metrics, source = reports.metrics_from_reports([folder / "report.json"], candidates=("run_x", "contr_g"))
    assert metrics == {
        "GTZAN accuracy": pytest.approx(gtzan["mean"] / 100, abs=1e-5),
        "MTG-Jamendo genre ROC-AUC": pytest.approx(jamendo["genre"]["mean"], abs=1e-5),
        "Melon playlists nDCG@10": pytest.approx(playlists["ndcg"], abs=1e-5),
        "Melon playlists MAP@10": pytest.approx(playlists["map"], abs=1e-5),
    }
    assert all(isinstance(v, float) for v in metrics.values())
    assert source["files"] == ["report.json"] and source["model"] == "contr_g"
    assert source["std"]["GTZAN accuracy"] == pytest.approx(gtzan["std"] / 100, abs=1e-5)
    with pytest.raises(ExportError, match=r"compares contr_cf, contr_g; .*--report-model"):
        reports.metrics_from_reports([folder / "report.json"], candidates=("run_x",))
    with pytest.raises(ExportError, match="no model 'nope'"):
        reports.metrics_from_reports([folder / "report.json"], model="nope")
    # both files: the newer one (gtzan.json) gives GTZAN accuracy
    metrics, source = reports.metrics_from_reports([folder / "gtzan.json", folder / "report.json"], model="contr_cf")
    assert metrics["GTZAN accuracy"] == 0.5 and "MTG-Jamendo genre ROC-AUC" in metrics
    assert source["files"] == ["report.json", "gtzan.json"]
    bad = folder / "bad.json"
    bad.write_text('{"something": 1}')
    with pytest.raises(ExportError, match="not an evaluation report"):
        reports.metrics_from_reports([bad])


def _fake_run(tmp_path, mode, seed):
    """A RUN_DIR as `python -m cmir_tf.train` leaves it, over a prepared folder (vocab, word2vec, manifest)."""
    import keras

    from cmir_tf.model.contrastive import build_model

    data = tmp_path / "prepared"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    w2v = rng.normal(size=(N_GENRES, C.W2V_DIM)).astype("float32")
    np.save(data / "word2vec.npy", w2v)
    (data / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    (data / "manifest.json").write_text(json.dumps({"cf_dim": C.CF_DIM, "counts": {"train": 8, "val": 1, "test": 1},
                                                    "stats": {"playlists": 5}}))
    run = tmp_path / f"run_{mode}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"mode": mode, "data": str(data), "dropout": 0.3}))
    keras.utils.set_random_seed(seed)
    model = build_model(mode, w2v, dropout=0.3, compile=False)
    model({"mel": tf.zeros([2, 256, 48]), "genres": tf.zeros([2, 10], tf.int32),
           "genre_mask": tf.ones([2, 10], tf.bool), "cf": tf.zeros([2, C.CF_DIM]), "song_id": tf.zeros([2], tf.int64)})
    _randomise_batch_norm(model.audio_encoder, rng)
    model.save_weights(str(run / "checkpoints" / "best.weights.h5"))
    return run, model


@pytest.mark.slow
def test_export_run_cli_fills_zoo_metadata_from_the_run(tmp_path, report_files, capsys):
    import hashlib
    import shutil

    run, model = _fake_run(tmp_path, "contr_g", 3)
    (run / "eval").mkdir()
    shutil.copy(report_files[0] / "report.json", run / "eval" / "report.json")
    out = tmp_path / "export"
    assert E.main(["--run", str(run), "--out", str(out), "--name", "cmir", "--no-onnx", "--link-base",
                   "https://models.example.org/cmir", "--author", "A. Person", "--email", "a@example.org"]) == 0
    assert "Keras: " in capsys.readouterr().out
    meta = json.loads((out / "cmir.json").read_text(encoding="utf-8"))
    _check_zoo_shape(meta)
    assert meta["link"] == "https://models.example.org/cmir/cmir.pb" and meta["email"] == "a@example.org"
    assert meta["dataset"]["size"] == "10 songs (train 8, val 1, test 1), 5 playlists"
    assert meta["dataset"]["metrics"]["GTZAN accuracy"] == pytest.approx(report_files[1]["mean"] / 100, abs=1e-5)
    block = meta["cmir_tf"]
    assert block["metrics_source"]["model"] == "contr_g" and block["metrics_source"]["files"] == ["report.json"]
    assert block["run"] == {"name": "run_contr_g",
                            "config_sha256": hashlib.sha256((run / "config.json").read_bytes()).hexdigest()}
    assert "run_dir" not in block and not (out / "cmir.onnx").exists()
    head = json.loads((out / "cmir-genres.json").read_text(encoding="utf-8"))
    assert head["inference"]["embedding_model"]["link"] == meta["link"]
    for f in ("cmir.json", "cmir-genres.json"):  # neither the run's nor the prepared folder's path
        text = (out / f).read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(run) not in text
    # an explicit --report wins over the run's eval/ folder; an unreadable one is an error (exit 2)
    assert E.main(["--run", str(run), "--out", str(out), "--no-onnx", "--report",
                   str(report_files[0] / "gtzan.json")]) == 0
    meta = json.loads((out / "cmir-audio-encoder.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["metrics"] == {"GTZAN accuracy": 0.5}
    capsys.readouterr()
    assert E.main(["--run", str(run), "--out", str(out), "--no-onnx", "--report", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: evaluation report not found" in capsys.readouterr().err


def test_description_names_the_presets_own_terms_pairs_and_mixup():
    """Issue 16: every mode was described as "cross-modal … genre … playlist"; now each preset says what it
    trained (terms with their λ, audio pairs, mixup) and the strategy is recorded beside it."""
    from cmir_tf.model.presets import PRESETS, resolve

    text, strategy = zoo.describe_strategy("ss", PRESETS["ss"], (1, 1, 1), 0.5)
    assert "mode ss: contrastive two crops of each song (self-supervised), λ=0.5; mixup α=7 (β=2)" in text
    assert "genre" not in text and "playlist" not in text
    assert strategy == {"align": [], "targets": [], "audio_pairs": "self", "mixup": 7.0, "lambdas": [1.0, 1.0, 1.0],
                        "lambda_audio": 0.5}
    text, _ = zoo.describe_strategy("aim_genre", PRESETS["aim_genre"])
    assert "audio pairs of songs sharing a genre (semantically weighted NT-Xent), λ=1; mixup α=7" in text
    text, _ = zoo.describe_strategy("bline_g", PRESETS["bline_g"])
    assert text.startswith("Baseline audio encoder trained with cmir_tf (mode bline_g: a head predicting the "
                           "genres; no mixup)")
    text, s = zoo.describe_strategy("contr_g", resolve("contr_g", align="a2g,a2p", mixup=3), (0.5, 2, 1))
    assert ("(mode contr_g: audio aligned with genre word embeddings (A2G), λ=0.5; audio aligned with playlist "
            "co-occurrence vectors (A2P), λ=2; mixup α=3 (β=2))") in text
    assert zoo._embedding_space({"strategy": s}) == ("embeddings in the space shared with genre and playlist "
                                                     "embeddings (compare with cosine)")
    assert zoo._embedding_space({"strategy": strategy}).startswith("audio embeddings (compare with cosine); not")
    texts = {zoo.describe_strategy(m, p)[0] for m, p in PRESETS.items()}
    assert len(texts) == len(PRESETS)
