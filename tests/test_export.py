"""Export: SavedModel for TF Serving, frozen graph for Essentia, Essentia JSON.

One export of a freshly built model (with non-trivial BatchNorm statistics, so inference mode matters)
is shared by the tests; each consumer is checked in a fresh process against the Keras model.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cmir_tf import constants as C  # noqa: E402
from cmir_tf import export as E  # noqa: E402
from cmir_tf.errors import ConfigError, DataError, ExportError  # noqa: E402
from cmir_tf.export import formats  # noqa: E402
from cmir_tf.export import frozen as F  # noqa: E402
from cmir_tf.export.exportdir import ExportDir  # noqa: E402
from cmir_tf.model.encoders import AudioEncoder, GenreEncoder  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)
N_GENRES = 6
VOCAB = [{"index": i, "code": f"GN0{i + 1}00", "name": f"genre {i}"} for i in range(N_GENRES)]


def _randomise_batch_norm(layer, rng):
    """Trained-looking moving statistics and affine parameters for every BatchNorm of LAYER."""
    for w in layer.weights:
        path = w.path
        if "moving_mean" in path or path.endswith("beta"):
            w.assign(rng.normal(0, 0.3, size=w.shape).astype("float32"))
        elif "moving_variance" in path or path.endswith("gamma"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))


def _mel_patches(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(-40, 15, size=(n, C.PATCH_FRAMES, C.N_BANDS))).astype("float32")


@pytest.fixture(scope="module")
def encoders():
    rng = np.random.default_rng(0)
    audio = AudioEncoder(dropout=0.5)
    audio(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]))
    _randomise_batch_norm(audio, rng)
    genre = GenreEncoder(rng.normal(size=(N_GENRES, C.W2V_DIM)).astype("float32"), dropout=0.5)
    genre(tf.zeros([1, C.MAX_GENRES], tf.int32), tf.ones([1, C.MAX_GENRES], tf.bool))
    return audio, genre


@pytest.fixture(scope="module")
def exported(encoders, tmp_path_factory):
    audio, genre = encoders
    out = tmp_path_factory.mktemp("export")
    res = E.export_model(audio, genre, VOCAB, str(out), name="enc")
    return out, res


def _run_child(script, *args, timeout=300):
    """Run SCRIPT in a fresh Python (no tensorflow-io, no state of this process)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_layout_is_tf_serving_and_nothing_is_left_behind(exported):
    out, res = exported
    assert res.version == 1 and os.fspath(res) == str(out)
    sm = out / "saved_model" / "1"
    assert (sm / "saved_model.pb").is_file() and (sm / "variables" / "variables.index").is_file()
    assert (sm / "assets" / "genres.txt").read_text(encoding="utf-8").splitlines() == [v["name"] for v in VOCAB]
    assert (out / "enc.pb").is_file() and (out / "enc.json").is_file()
    zoo_files = {"enc.keras", "enc-genres.pb", "enc-genres.json"}  # cmir_tf.export.zoo (tests/test_zoo.py)
    if not formats.onnx_missing():
        zoo_files |= {"enc.onnx", "enc-genres.onnx"}
    own = {".cmir-export-files", ".cmir-lock"}  # the files it wrote, the folder's lock (no staging left)
    assert set(os.listdir(out)) == {"enc.json", "enc.pb", "saved_model"} | zoo_files | own
    recorded = json.loads((out / ".cmir-export-files").read_text(encoding="utf-8"))["files"]
    assert recorded == sorted({"enc.json", "enc.pb"} | zoo_files)


def test_saved_model_in_fresh_process_reproduces_keras_and_uses_core_ops_only(exported, encoders, tmp_path):
    out, _ = exported
    audio, _ = encoders
    mel = _mel_patches(5, 1)
    np.save(tmp_path / "mel.npy", mel)
    _run_child("""
        import sys, numpy as np, tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow.python.framework import op_def_registry
        sm_dir, mel_path, out_path = sys.argv[1:]
        assert "tensorflow_io" not in sys.modules
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(open(sm_dir + "/saved_model.pb", "rb").read())
        ops = set()
        for mg in proto.meta_graphs:
            ops |= {n.op for n in mg.graph_def.node}
            for fn in mg.graph_def.library.function:
                ops |= {n.op for n in fn.node_def}
        unknown = sorted(op for op in ops if op_def_registry.get(op) is None or op.startswith("IO>"))
        assert not unknown, unknown
        m = tf.saved_model.load(sm_dir)
        r = m.signatures["serving_default"](melspectrogram=tf.constant(np.load(mel_path)))
        np.savez(out_path, embeddings=r["embeddings"].numpy(), features=r["features"].numpy())
    """, out / "saved_model" / "1", tmp_path / "mel.npy", tmp_path / "out.npz")
    got = np.load(tmp_path / "out.npz")
    emb, feat = audio(mel, training=False)
    np.testing.assert_allclose(got["embeddings"], np.asarray(emb), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["features"], np.asarray(feat), atol=1e-5, rtol=0)


def test_saved_model_cli_lists_the_three_signatures_with_named_tensors(exported):
    out, _ = exported
    proc = subprocess.run([os.path.join(VENV_BIN, "saved_model_cli"), "show", "--dir", str(out / "saved_model" / "1"),
                           "--all"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    sigs = {}
    for block in text.split("signature_def['")[1:]:
        name = block.split("'", 1)[0]
        sigs[name] = block
    assert {"serving_default", "embed_waveform", "tag_genres"} <= set(sigs)
    sd = sigs["serving_default"]
    assert "inputs['melspectrogram']" in sd and "shape: (-1, 256, 48)" in sd
    assert "outputs['embeddings']" in sd and "shape: (-1, 128)" in sd
    assert "outputs['features']" in sd and "shape: (-1, 1024)" in sd
    assert "inputs['waveform']" in sigs["embed_waveform"] and "outputs['mean']" in sigs["embed_waveform"]
    tg = sigs["tag_genres"]
    assert "outputs['scores']" in tg and f"shape: (-1, {N_GENRES})" in tg
    assert "outputs['genres']" in tg and "DT_STRING" in tg


def test_tag_genres_is_cosine_against_each_single_genre_embedding(exported, encoders):
    out, _ = exported
    audio, genre = encoders
    mel = _mel_patches(3, 2)
    m = tf.saved_model.load(str(out / "saved_model" / "1"))
    r = m.signatures["tag_genres"](melspectrogram=tf.constant(mel))
    assert [g.decode() for g in r["genres"].numpy()] == [v["name"] for v in VOCAB]
    # independent: φ_a from the audio encoder, φ_w of genre i alone (one unmasked slot), cosine in numpy
    phi_a = np.asarray(audio(mel, training=False)[0], np.float64)
    phi_w = []
    for i in range(N_GENRES):
        g = np.zeros((1, C.MAX_GENRES), "int32")
        g[0, 0] = i
        mask = np.zeros((1, C.MAX_GENRES), bool)
        mask[0, 0] = True
        phi_w.append(np.asarray(genre(g, mask, training=False))[0])
    phi_w = np.asarray(phi_w, np.float64)
    cos = (phi_a / np.linalg.norm(phi_a, axis=1, keepdims=True)) @ (phi_w / np.linalg.norm(phi_w, axis=1, keepdims=True)).T
    np.testing.assert_allclose(r["scores"].numpy(), cos, atol=1e-5, rtol=0)


def test_embed_waveform_equals_front_end_then_encoder(exported, encoders):
    frontend = pytest.importorskip("cmir_tf.audio.frontend")
    out, _ = exported
    audio, _ = encoders
    t = np.arange(int(9.5 * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    rng = np.random.default_rng(3)
    wave = (0.3 * np.sin(2 * np.pi * (220 + 200 * t) * t) + 0.05 * rng.normal(size=t.size)).astype("float32")
    m = tf.saved_model.load(str(out / "saved_model" / "1"))
    r = m.signatures["embed_waveform"](waveform=tf.constant(wave))
    mel = np.asarray(frontend.melspectrogram(tf.constant(wave)))
    n_patches = mel.shape[0] // C.PATCH_FRAMES
    assert n_patches == 2  # 9.5 s → 594 frames → two non-overlapping 256-frame patches
    patches = mel[: n_patches * C.PATCH_FRAMES].reshape(n_patches, C.PATCH_FRAMES, C.N_BANDS)
    emb = np.asarray(audio(patches, training=False)[0])
    np.testing.assert_allclose(r["embeddings"].numpy(), emb, atol=1e-4, rtol=0)
    np.testing.assert_allclose(r["mean"].numpy(), emb.mean(axis=0), atol=1e-4, rtol=0)


def test_frozen_graph_names_and_essentia_json_agree(exported):
    out, _ = exported
    meta = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    for key in ("name", "type", "link", "version", "description", "author", "email", "release_date", "framework",
                "framework_version", "classes", "model_types", "dataset", "schema", "citation", "inference"):
        assert key in meta, key
    assert set(meta["dataset"]) >= {"name", "citation", "size", "metrics"}
    assert meta["name"] == "enc" and meta["link"] == "" and meta["version"] == "1"  # no --link-base: no URL
    inf = meta["inference"]
    assert inf["sample_rate"] == 16000 and inf["algorithm"] == "TensorflowPredict2D"
    assert inf["patch_size"] == 256 and inf["patch_hop_size"] == 256
    assert "embedding_model" not in inf  # in the zoo, a head's pointer to its upstream extractor

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((out / "enc.pb").read_bytes())
    nodes = {n.name: n for n in graph.node}
    (inp,) = meta["schema"]["inputs"]
    assert nodes[inp["name"]].op == "Placeholder"
    dims = [d.size for d in nodes[inp["name"]].attr["shape"].shape.dim]
    assert dims == [-1] + inp["shape"] == [-1, 256, 48]
    outputs = {o["name"]: o for o in meta["schema"]["outputs"]}
    assert set(outputs) == {"embeddings", "features"} <= set(nodes)
    for o in outputs.values():
        assert set(o) >= {"name", "type", "shape", "op", "description", "output_purpose"}
    assert outputs["embeddings"]["output_purpose"] == "embeddings" and outputs["embeddings"]["shape"] == [1, 128]
    assert outputs["features"]["shape"] == [1, 1024]
    # core ops only, and no attribute a runtime would have to fill in (MatMul grad_a/grad_b, _-internals)
    assert not [n.op for n in graph.node if n.op.startswith("IO>")]
    matmuls = [n for n in graph.node if n.op == "MatMul"]
    assert matmuls and not any({"grad_a", "grad_b"} & set(n.attr) for n in matmuls)
    assert not [k for n in graph.node for k in n.attr if k.startswith("_")]


def _essentia_predict(graph, mel, inp, outputs, workdir):
    """TensorflowPredict2D in a child process (tests/essentia_ref.py) with TF's log on; (outputs, stderr)."""
    import essentia_ref

    out_dir = workdir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "mel.npy", mel)
    args = ["predict2d", "--graph", graph, "--input", inp, "--data", workdir / "mel.npy", "--out-dir", out_dir,
            "--patch-size", 256, "--patch-hop-size", 256, "--batch-size", 2]
    for o in outputs:
        args += ["--output", o]
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # Essentia's TensorFlow reports unknown attributes at ERROR level
    try:
        proc = essentia_ref.run_child(args)
    finally:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = old if old is not None else "2"
    return [np.load(out_dir / f"output_{k}.npy", allow_pickle=False) for k in range(len(outputs))], proc.stderr


@pytest.mark.slow
def test_essentia_loads_frozen_graph_cleanly_and_matches_saved_model(exported, encoders, tmp_path):
    sys.path.insert(0, HERE)
    essentia_ref = pytest.importorskip("essentia_ref")
    if not essentia_ref.essentia_available():
        pytest.skip("essentia-tensorflow is not installed (pip install -e .[test])")
    out, _ = exported
    meta = json.loads((out / "enc.json").read_text(encoding="utf-8"))
    assert meta["inference"]["patch_size"] == 256
    # a Melon-like mel of 600 frames: Essentia cuts 2 full patches (hop 256) and drops the rest
    mel = _mel_patches(3, 4).reshape(-1, C.N_BANDS)[:600]
    m = tf.saved_model.load(str(out / "saved_model" / "1"))
    want = m.signatures["serving_default"](melspectrogram=tf.constant(mel[:512].reshape(2, 256, 48)))
    names = [o["name"] for o in meta["schema"]["outputs"]]
    got, stderr = _essentia_predict(out / "enc.pb", mel, meta["schema"]["inputs"][0]["name"], names, tmp_path)
    assert "Successfully loaded graph file" in stderr  # the log is on, so a warning would be seen
    assert "not in the op definition" not in stderr, stderr[-3000:]
    for name, arr in zip(names, got):
        np.testing.assert_allclose(arr, want[name].numpy(), atol=1e-4, rtol=0)

    # control: the same encoder frozen without stripping does draw the warning this test looks for
    audio, _ = encoders
    raw = tmp_path / "raw.pb"
    raw.write_bytes(F.freeze_audio_encoder(audio, strip=False).SerializeToString())
    _, stderr = _essentia_predict(raw, mel, "melspectrogram", ["embeddings"], tmp_path / "raw")
    # TF names the first unknown attribute it meets, grad_a or grad_b (map order varies from run to run)
    assert re.search(r"grad_[ab] which is not in the op definition", stderr), stderr[-3000:]


def test_refuses_to_overwrite_a_version_and_counts_up(exported, encoders):
    out, _ = exported
    audio, _ = encoders
    before = sorted(os.listdir(out / "saved_model" / "1"))
    stamp = os.stat(out / "saved_model" / "1" / "saved_model.pb").st_mtime_ns
    with pytest.raises(ExportError, match=r"version 1 already exists; refusing to overwrite"):
        E.export_model(audio, None, [], str(out), version=1, name="enc")
    assert sorted(os.listdir(out / "saved_model" / "1")) == before
    assert os.stat(out / "saved_model" / "1" / "saved_model.pb").st_mtime_ns == stamp
    assert sorted(d for d in os.listdir(out) if d.startswith(".")) == [".cmir-export-files", ".cmir-lock"]
    assert ExportDir(out).resolve_version() == 2
    with pytest.raises(ConfigError, match="version: must be a positive integer"):
        ExportDir(out).resolve_version(0)


def test_strip_default_attrs_removes_default_and_internal_attrs_only():
    graph = tf.compat.v1.GraphDef()
    node = graph.node.add(name="m", op="MatMul")
    node.attr["T"].type = tf.float32.as_datatype_enum
    node.attr["transpose_a"].b = True  # not the default: kept
    node.attr["transpose_b"].b = False  # the default: removed
    node.attr["_class"].s = b"x"
    removed = F.strip_default_attrs(graph)
    assert set(graph.node[0].attr) == {"T", "transpose_a"}
    assert ("MatMul", "transpose_b") in removed and ("MatMul", "_class") in removed


def _fake_run(tmp_path, mode, seed, model_json=False):
    """A RUN_DIR as train.py leaves it (config.json, checkpoints/; model.json if MODEL_JSON, else as a run
    from before model.json existed) over a prepared folder (vocab, word2vec)."""
    import keras

    from cmir_tf.model.contrastive import build_model

    data = tmp_path / "prepared"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    w2v = rng.normal(size=(N_GENRES, C.W2V_DIM)).astype("float32")
    np.save(data / "word2vec.npy", w2v)
    (data / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    (data / "manifest.json").write_text(json.dumps({"cf_dim": C.CF_DIM, "counts": {"train": 8, "val": 1, "test": 1}}))
    run = tmp_path / f"run_{mode}"
    (run / "checkpoints").mkdir(parents=True)
    config = {"mode": mode, "data": str(data), "dropout": 0.3, "temperature": 0.1, "embed_dim": 128, "num_heads": 4,
              "lambda_a2g": 1.0, "lambda_a2p": 1.0, "lambda_g2p": 1.0, "epochs": 3, "lr": 1e-4}
    (run / "config.json").write_text(json.dumps(config))
    models = []
    for fname in ("last.weights.h5", "best.weights.h5"):
        keras.utils.set_random_seed(len(models) + 10 * seed)
        model = build_model(mode, w2v, dropout=0.3, compile=False)
        model({"mel": tf.zeros([2, 256, 48]), "genres": tf.zeros([2, 10], tf.int32),
               "genre_mask": tf.ones([2, 10], tf.bool), "cf": tf.zeros([2, C.CF_DIM]), "song_id": tf.zeros([2], tf.int64)})
        _randomise_batch_norm(model.audio_encoder, rng)
        model.save_weights(str(run / "checkpoints" / fname))
        models.append(model)
    if model_json:
        (run / "model.json").write_text(json.dumps(models[1].get_config()))
    return run, models[1]  # the best one is what must be exported


@pytest.mark.slow
def test_export_run_cli_exports_the_best_checkpoint_of_a_run(tmp_path, capsys):
    run, best = _fake_run(tmp_path, "contr_cf_g", 1)
    out = tmp_path / "export"
    assert E.main(["--run", str(run), "--out", str(out), "--name", "contr"]) == 0
    m = tf.saved_model.load(str(out / "saved_model" / "1"))
    mel = _mel_patches(2, 5)
    r = m.signatures["serving_default"](melspectrogram=tf.constant(mel))
    np.testing.assert_allclose(r["embeddings"].numpy(), np.asarray(best.audio_encoder(mel, training=False)[0]),
                               atol=1e-5, rtol=0)
    assert "tag_genres" in m.signatures
    meta = json.loads((out / "contr.json").read_text(encoding="utf-8"))
    assert meta["cmir_tf"]["mode"] == "contr_cf_g" and meta["cmir_tf"]["weights"] == "best.weights.h5"
    # a second export of the same run counts the version up; an existing one is refused with exit 2
    assert E.main(["--run", str(run), "--out", str(out), "--name", "contr"]) == 0
    assert ExportDir(out).versions() == [1, 2]
    capsys.readouterr()
    assert E.main(["--run", str(run), "--out", str(out), "--version", "2"]) == 2
    assert "version 2 already exists" in capsys.readouterr().err
    assert E.main(["--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "config.json: missing" in capsys.readouterr().err


@pytest.mark.slow
def test_export_run_without_genre_encoder_has_no_tag_genres(tmp_path):
    run, best = _fake_run(tmp_path, "contr_cf", 2, model_json=True)
    res = E.export_run(str(run), str(tmp_path / "export"))
    m = tf.saved_model.load(res.saved_model_dir)
    assert set(m.signatures) == {"serving_default", "embed_waveform"}
    assert not os.path.exists(os.path.join(res.saved_model_dir, "assets", "genres.txt"))
    meta = json.loads(open(res.metadata_path, encoding="utf-8").read())  # described as what it trained
    assert "(mode contr_cf: audio aligned with playlist co-occurrence vectors (A2P), λ=1; no mixup)" in meta["description"]
    assert "genre" not in meta["description"] and meta["cmir_tf"]["strategy"]["align"] == ["a2p"]
    assert meta["schema"]["outputs"][0]["description"].startswith("embeddings in the space shared with playlist")
    # rebuilt from the run's model.json: the served encoder is the best checkpoint's
    mel = _mel_patches(2, 6)
    r = m.signatures["serving_default"](melspectrogram=tf.constant(mel))
    np.testing.assert_allclose(r["embeddings"].numpy(), np.asarray(best.audio_encoder(mel, training=False)[0]),
                               atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# Export under hostile use (issue 16): highest version on top, only its own files, one error line
# ------------------------------------------------------------------------------------------------
def _quick_export(audio, out, version=None, name="enc", genre=None):
    from cmir_tf.export.zoo import ZooOptions

    return E.export_model(audio, genre, VOCAB, str(out), version, name=name, options=ZooOptions(onnx=False))


@pytest.mark.slow
def test_a_lower_version_leaves_the_top_level_files_of_the_highest(encoders, tmp_path):
    """`--version 5` then `--version 3`: TF Serving and embed use 5, so the .pb/.keras/JSON stay 5's."""
    audio, _ = encoders
    other = AudioEncoder(dropout=0.5)
    other(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]))
    _randomise_batch_norm(other, np.random.default_rng(9))
    out = tmp_path / "exp"
    _quick_export(audio, out, 5)
    top = {f: (out / f).read_bytes() for f in ("enc.pb", "enc.json", "enc.keras")}
    res = _quick_export(other, out, 3)
    assert res.version == 3 and res.graph_path is None and res.metadata_path is None
    assert "describe version 5, the highest" in res.notes[-1]
    assert {f: (out / f).read_bytes() for f in top} == top
    assert json.loads(top["enc.json"])["cmir_tf"]["saved_model_version"] == 5
    assert ExportDir(out).versions() == [3, 5]
    from cmir_tf.export.exportdir import find_saved_model

    assert find_saved_model(out) == str(out / "saved_model" / "5")
    mel = _mel_patches(2, 3)  # the frozen graph on top is version 5's model, not 3's
    got = tf.saved_model.load(str(out / "saved_model" / "3")).signatures["serving_default"](melspectrogram=mel)
    np.testing.assert_allclose(got["embeddings"].numpy(), np.asarray(other(mel, training=False)[0]), atol=1e-5)


@pytest.mark.slow
def test_export_never_replaces_or_deletes_a_file_it_did_not_write(encoders, tmp_path, capsys):
    audio, _ = encoders
    run, _ = _fake_run(tmp_path, "contr_cf", 3, model_json=True)
    for fname in ("cmir-audio-encoder-genres.json", "cmir-audio-encoder.onnx"):
        out = tmp_path / f"exp_{fname}"
        out.mkdir()
        (out / fname).write_text("the user's own file")
        assert E.main(["--run", str(run), "--out", str(out), "--no-onnx"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {out / fname}: exists and was not written by an "
                                                       "export into this folder"), err
        assert (out / fname).read_text() == "the user's own file"
        assert sorted(os.listdir(out)) == sorted([fname, ".cmir-lock"])  # no saved_model/, no staging
    # what an export wrote is its own: the next export replaces it and removes what it lacks
    out = tmp_path / "own"
    _quick_export(audio, out, genre=encoders[1])
    assert (out / "enc-genres.json").exists()
    _quick_export(audio, out, name="enc2")
    assert sorted(f for f in os.listdir(out) if not f.startswith(".")) == [
        "enc2.json", "enc2.keras", "enc2.pb", "saved_model"]
    assert json.loads((out / ".cmir-export-files").read_text()) == {
        "files": ["enc2.json", "enc2.keras", "enc2.pb"]}


def test_files_in_the_way_are_one_error_line_and_nothing_is_left(encoders, tmp_path, capsys, monkeypatch):
    audio, _ = encoders
    run, _ = _fake_run(tmp_path, "contr_cf", 4, model_json=True)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model").write_text("x")
    (tmp_path / "dirs" / "cmir-audio-encoder.json").mkdir(parents=True)
    cases = {str(tmp_path / "afile"): "is a file, not a folder",
             str(tmp_path / "afile" / "sub"): f"{tmp_path / 'afile'} is a file, not a folder",
             str(tmp_path / "sm"): f"{tmp_path / 'sm' / 'saved_model'}: is a file, not a folder",
             str(tmp_path / "dirs"): f"{tmp_path / 'dirs' / 'cmir-audio-encoder.json'}: is a folder, where the "
                                     "export's metadata file goes"}
    for out, reason in cases.items():
        assert E.main(["--run", str(run), "--out", out, "--no-onnx"]) == 2, out
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and reason in err, err

    # a failed export leaves no empty saved_model/ (nor staging)
    from cmir_tf.export import zoo

    def fail(*a, **k):
        raise ExportError("ONNX differs from the TensorFlow model by nan")

    monkeypatch.setattr(zoo, "stage_files", fail)
    with pytest.raises(ExportError, match="by nan"):
        _quick_export(audio, tmp_path / "failed")
    assert os.listdir(tmp_path / "failed") == [".cmir-lock"]


def test_a_second_export_into_a_folder_in_use_exits_4(encoders, tmp_path, capsys):
    run, _ = _fake_run(tmp_path, "contr_cf", 5, model_json=True)
    out = tmp_path / "exp"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cmir_tf.lock import folder_lock
        with folder_lock({str(out)!r}):
            print("held", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert E.main(["--run", str(run), "--out", str(out), "--no-onnx"]) == 4
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: in use by process {holder.pid}") and err.count("\n") == 1, err
        assert sorted(os.listdir(out)) == [".cmir-lock"]
    finally:
        holder.communicate("", timeout=60)


def test_misleading_messages_say_what_the_path_is(exported, tmp_path, capsys):
    """An .onnx/.keras given as --model is named as such (was "no such folder"); a run whose config.json is
    a folder or a symbolic-link loop says so (was "missing")."""
    from cmir_tf import embed as EM
    from cmir_tf.export.exportdir import find_saved_model

    out, _ = exported
    for fname, kind in (("enc.onnx", "an ONNX model"), ("enc.keras", "a Keras model"), ("enc.pb", "a frozen graph")):
        if (out / fname).exists():
            with pytest.raises(ExportError, match=rf"{fname}: is {kind}, not a folder; give the export folder"):
                find_saved_model(out / fname)
    assert EM.main(["--model", str(out / "enc.keras"), str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err == (f"error: --model: {out / 'enc.keras'}: is a Keras model, not a folder; give "
                                       "the export folder that holds saved_model/<N>/ (or a SavedModel folder with "
                                       "saved_model.pb)\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ExportError, match="loop: a symbolic link that leads nowhere"):
        find_saved_model(tmp_path / "loop")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").mkdir()
    assert E.main(["--run", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "config.json: a folder, not a file (run configuration)" in capsys.readouterr().err
    (run / "config.json").rmdir()
    (run / "config.json").symlink_to(run / "config.json")
    assert E.main(["--run", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "config.json: a symbolic link that leads nowhere (dangling, or a loop)" in capsys.readouterr().err
    from cmir_tf.evaluate.downstream import require_files

    (tmp_path / "d.wav").mkdir()
    with pytest.raises(DataError, match=r"2 audio files are missing or not files: .*gone\.wav, .*d\.wav \(a folder"):
        require_files([tmp_path / "gone.wav", tmp_path / "d.wav"], "audio files are")
