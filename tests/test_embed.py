"""Embedder and `python -m cmir_tf.embed`: exported model → patch embeddings + track mean, per input file."""
import os
import wave

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cmir_tf import constants as C  # noqa: E402
from cmir_tf import embed as EM  # noqa: E402
from cmir_tf import export as E  # noqa: E402
from cmir_tf.embed import folder as embed_folder  # noqa: E402
from cmir_tf.errors import ConfigError, DataError, ExportError  # noqa: E402
from cmir_tf.export.exportdir import find_saved_model  # noqa: E402
from cmir_tf.model.encoders import AudioEncoder  # noqa: E402


def _encoder(seed):
    rng = np.random.default_rng(seed)
    enc = AudioEncoder()
    enc(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]))
    for w in enc.weights:  # trained-looking BatchNorm statistics so inference mode matters
        if "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.3, size=w.shape).astype("float32"))
        elif "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
    return enc


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An export folder with versions 1 (another model) and 2 (ENC): the Embedder must use version 2."""
    out = tmp_path_factory.mktemp("export")
    E.export_model(_encoder(1), None, [], str(out), version=1, name="old")
    enc = _encoder(2)
    E.export_model(enc, None, [], str(out), version=2, name="enc")
    return out, enc


def _reference(enc, mel):
    """Independent: non-overlapping 256-frame patches in numpy (tail dropped), encoder in inference mode."""
    n = max(1, mel.shape[0] // C.PATCH_FRAMES)
    if mel.shape[0] < C.PATCH_FRAMES:
        mel = np.concatenate([mel, np.full((C.PATCH_FRAMES - mel.shape[0], C.N_BANDS), C.DB_FLOOR, "float32")])
    patches = mel[: n * C.PATCH_FRAMES].reshape(n, C.PATCH_FRAMES, C.N_BANDS)
    emb = np.asarray(enc(patches, training=False)[0])
    return emb, emb.mean(axis=0)


def _mel(n_frames, seed):
    return np.random.default_rng(seed).normal(-40, 15, size=(n_frames, C.N_BANDS)).astype("float32")


def _write_melon(path, mel_time_major):
    np.save(path, np.ascontiguousarray(mel_time_major.T), allow_pickle=False)  # Melon stores (48, frames)


def _write_wav(path, seconds, seed, rate=C.SAMPLE_RATE):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(seed).normal(size=t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def test_find_saved_model_takes_the_highest_version_or_the_folder_itself(model, tmp_path):
    out, _ = model
    assert find_saved_model(out) == os.path.join(str(out), "saved_model", "2")
    assert find_saved_model(out / "saved_model") == os.path.join(str(out / "saved_model"), "2")  # TF Serving base
    assert find_saved_model(out / "saved_model" / "1") == str(out / "saved_model" / "1")
    with pytest.raises(ExportError, match="no SavedModel"):
        find_saved_model(tmp_path)


def test_embed_mel_matches_encoder_on_numpy_patches(model):
    out, enc = model
    emb = EM.Embedder(out, batch_size=2)
    for n_frames in (1876, 600, 256, 100):  # Melon's 30 s, a tail to drop, exactly one patch, too short
        mel = _mel(n_frames, n_frames)
        patches, mean = emb.embed_mel(mel)
        want, want_mean = _reference(enc, mel)
        assert patches.shape == (max(1, n_frames // 256), 128) and mean.shape == (128,)
        np.testing.assert_allclose(patches, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(mean, want_mean, atol=1e-5, rtol=0)
    with pytest.raises(DataError, match=r"\(n_frames, 48\)"):
        emb.embed_mel(np.zeros((48, 300), "float32"))


def test_embed_file_reads_melon_npy_and_audio_like_the_exported_front_end(model, tmp_path):
    out, enc = model
    emb = EM.Embedder(out)
    mel = _mel(700, 5)
    _write_melon(tmp_path / "123.npy", mel)
    patches, mean = emb.embed_file(tmp_path / "123.npy")
    np.testing.assert_allclose(patches, _reference(enc, mel)[0], atol=1e-5, rtol=0)

    _write_wav(tmp_path / "a.wav", 9.0, 0)
    patches, mean = emb.embed_file(tmp_path / "a.wav")
    # the SavedModel's embed_waveform signature: the front end inside the exported graph
    from cmir_tf.audio import decoding as audio

    sm = tf.saved_model.load(os.path.join(str(out), "saved_model", "2"))
    r = sm.signatures["embed_waveform"](waveform=tf.constant(audio.load_audio(tmp_path / "a.wav")))
    assert patches.shape == (2, 128)  # 9 s → 564 frames → 2 patches
    np.testing.assert_allclose(patches, r["embeddings"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(mean, r["mean"].numpy(), atol=1e-4, rtol=0)

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        emb.embed_file(tmp_path / "notes.txt")


def test_embed_files_batches_across_tracks_in_order_and_reports_bad_files(model, tmp_path):
    out, enc = model
    lengths = [600, 1876, 300, 256, 1000]
    paths = []
    for i, n in enumerate(lengths):
        paths.append(str(tmp_path / f"{i}.npy"))
        _write_melon(paths[-1], _mel(n, 10 + i))
    bad = str(tmp_path / "bad.npy")
    (tmp_path / "bad.npy").write_bytes(b"not an npy file")
    paths.insert(2, bad)
    emb = EM.Embedder(out, batch_size=3)  # batches straddle tracks (2, 7, 1, 1, 3 patches)
    results = list(emb.embed_files(paths))
    assert [r[0] for r in results] == paths
    for path, patches, mean, err in results:
        if path == bad:
            assert patches is None and isinstance(err, DataError) and bad in str(err)
            continue
        assert err is None
        want, want_mean = _reference(enc, np.load(path).T)
        np.testing.assert_allclose(patches, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(mean, want_mean, atol=1e-5, rtol=0)


def test_cli_writes_patches_and_mean_per_input_and_keeps_going_after_a_bad_file(model, tmp_path, capsys):
    out, enc = model
    src = tmp_path / "mels"
    (src / "12").mkdir(parents=True)
    mels = {"12/12000": _mel(1876, 1), "12/12001": _mel(400, 2)}
    for rel, m in mels.items():
        _write_melon(src / f"{rel}.npy", m)
    _write_melon(src / "12" / "12002.npy", np.full((300, C.N_BANDS), np.inf, "float32"))  # non-finite
    _write_wav(tmp_path / "song.wav", 5.0, 1)
    dst = tmp_path / "emb"
    code = EM.main(["--model", str(out), str(src), str(tmp_path / "song.wav"), str(tmp_path / "missing.mp3"),
                    "--out", str(dst), "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "12002.npy: non_finite" in err and "missing.mp3" in err and "2 failed" in err
    for rel, m in mels.items():
        want, want_mean = _reference(enc, m)
        np.testing.assert_allclose(np.load(dst / f"{rel}.npy"), want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.load(dst / f"{rel}.mean.npy"), want_mean, atol=1e-5, rtol=0)
    assert np.load(dst / "song.npy").shape == (1, 128) and np.load(dst / "song.mean.npy").shape == (128,)
    assert not (dst / "12" / "12002.npy").exists()
    assert sorted(p.name for p in dst.rglob("*") if p.name.endswith(".npy") and "tmp" in p.name) == []

    # all inputs readable → 0; a folder without a model → 2 with the flag named
    assert EM.main(["--model", str(out), str(src / "12" / "12000.npy"), "--out", str(dst), "--no-progress"]) == 0
    assert EM.main(["--model", str(tmp_path), str(src / "12" / "12000.npy"), "--out", str(dst), "--no-progress"]) == 2
    assert "--model" in capsys.readouterr().err


def test_colliding_output_names_are_refused(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _write_melon(tmp_path / d / "x.npy", _mel(256, 0))
    with pytest.raises(ConfigError, match="collide"):
        EM.collect_inputs([tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy"])
    assert [i for _, i in EM.collect_inputs([tmp_path])] == ["a/x", "b/x"]


# ------------------------------------------------------------------------------------------------
# Audio files through embed_files and the CLI: good and damaged together, any number of threads
# ------------------------------------------------------------------------------------------------
def _audio_inputs(folder):
    """Good ogg / mp3 / wav / flac files (1-3 patches each) and every kind of bad input, interleaved."""
    from test_audio import _damaged_files, _music, write_audio

    folder.mkdir()
    good = [str(write_audio(folder / f"g{i}.{ext}", _music(rate, ch, secs, seed=40 + i), rate))
            for i, (ext, rate, ch, secs) in enumerate([("ogg", 44100, 2, 9.0), ("mp3", 22050, 2, 13.0),
                                                       ("wav", 48000, 1, 5.0), ("flac", 44100, 2, 8.5),
                                                       ("mp3", 48000, 1, 4.5), ("ogg", 48000, 2, 12.5)])]
    bad = list(_damaged_files(folder / "bad"))
    paths = []
    for i in range(max(len(good), len(bad))):
        paths += good[i:i + 1] + bad[i:i + 1]
    return paths, set(good)


def test_embed_files_with_damaged_audio_equals_one_thread_for_any_workers(model, tmp_path):
    """Every good file is embedded exactly as with one reading thread (and as embed_mel of its mel),
    every bad one yields one DataError naming it, in input order — with 1, 2 and 4 threads, twice each."""
    out, _ = model
    paths, good = _audio_inputs(tmp_path / "in")
    emb = EM.Embedder(out, batch_size=3)  # batches straddle tracks
    reference = list(emb.embed_files(paths, workers=1))
    assert [r[0] for r in reference] == paths
    for path, patches, mean, err in reference:
        if path in good:
            assert err is None, err
            want, want_mean = emb.embed_mel(emb.load_mel(path))
            np.testing.assert_allclose(patches, want, atol=1e-5, rtol=0)
            np.testing.assert_allclose(mean, want_mean, atol=1e-5, rtol=0)
        else:
            assert patches is None and isinstance(err, DataError) and str(err).startswith(f"{path}: ")
    assert sum(p is not None for _, p, _, _ in reference) == len(good)
    for workers in (2, 4, 2, 4):
        got = list(emb.embed_files(paths, workers=workers, prefetch=6))
        assert [g[0] for g in got] == paths
        for (path, p0, m0, e0), (_, p1, m1, e1) in zip(reference, got):
            if e0 is None:
                assert e1 is None, (workers, e1)
                np.testing.assert_array_equal(p1, p0, err_msg=f"{path} with {workers} workers")
                np.testing.assert_array_equal(m1, m0)
            else:
                assert p1 is None and str(e1) == str(e0)


def test_cli_on_a_good_and_a_bad_wav_reports_one_error_line_and_exits_1(model, tmp_path):
    """`python -m cmir_tf.embed` in a fresh process (tensorflow-io's decoder used to segfault here, exit
    139, about one run in four): exit status 1, exactly one `error:` line, naming bad.wav."""
    import subprocess
    import sys

    out, _ = model
    _write_wav(tmp_path / "good.wav", 6.0, 3, rate=44100)
    (tmp_path / "bad.wav").write_text("not audio")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "cmir_tf.embed", "--model", str(out), "--out", str(tmp_path / "emb"),
                           "--no-progress", str(tmp_path / "good.wav"), str(tmp_path / "bad.wav")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'bad.wav'}: not a readable audio file (Format not recognised)"]
    assert "1 embedded" in proc.stderr and "1 failed" in proc.stderr
    assert np.load(tmp_path / "emb" / "good.npy").shape == (1, 128)


# ------------------------------------------------------------------------------------------------
# What embed may write (issue 16): only its own outputs; every decodable format; non-UTF-8 names
# ------------------------------------------------------------------------------------------------
def _run_cli(out, inputs, dst, capsys):
    code = EM.main(["--model", str(out), *map(str, inputs), "--out", str(dst), "--no-progress"])
    return code, capsys.readouterr().err


def test_a_users_file_in_out_is_never_overwritten_but_embeds_own_outputs_are(model, tmp_path, capsys):
    out, enc = model
    _write_melon(tmp_path / "song.npy", _mel(300, 5))
    dst = tmp_path / "emb"
    dst.mkdir()
    (dst / "song.mean.npy").write_bytes(b"the user's own file")
    code, err = _run_cli(out, [tmp_path / "song.npy"], dst, capsys)
    assert code == 2 and err.count("error:") == 1, err
    assert f"error: {dst / 'song.mean.npy'}: exists and was not written by embed" in err
    assert (dst / "song.mean.npy").read_bytes() == b"the user's own file" and not (dst / "song.npy").exists()

    (dst / "song.mean.npy").unlink()
    for _ in range(2):  # a rerun replaces embed's own outputs
        assert _run_cli(out, [tmp_path / "song.npy"], dst, capsys)[0] == 0
        np.testing.assert_allclose(np.load(dst / "song.mean.npy"), _reference(enc, _mel(300, 5))[1], atol=1e-5)
    # an input inside --out (its output would replace it) is refused too
    _write_melon(dst / "mine.npy", _mel(300, 6))
    code, err = _run_cli(out, [dst / "mine.npy"], dst, capsys)
    assert code == 2 and f"{dst / 'mine.npy'}: exists and was not written by embed" in err
    np.testing.assert_array_equal(np.load(dst / "mine.npy"), _mel(300, 6).T)


def test_an_input_named_like_another_inputs_track_mean_is_refused_naming_both(tmp_path):
    _write_melon(tmp_path / "x.npy", _mel(300, 1))
    _write_melon(tmp_path / "x.mean.npy", _mel(300, 2))
    with pytest.raises(ConfigError, match=r"x\.npy and .*x\.mean\.npy would both be written to x\.mean\.npy"):
        EM.collect_inputs([tmp_path / "x.npy", tmp_path / "x.mean.npy"])
    with pytest.raises(ConfigError, match=r"x\.mean\.npy and .*x\.npy would both be written to x\.mean\.npy"):
        EM.collect_inputs([tmp_path / "x.mean.npy", tmp_path / "x.npy"])
    ignored = []  # in a walked folder, x.mean.npy is a track mean: ignored, and counted
    assert EM.collect_inputs([tmp_path], ignored) == [(str(tmp_path / "x.npy"), "x")]
    assert ignored == [str(tmp_path / "x.mean.npy")]


def test_folder_walk_takes_every_format_libsndfile_decodes_and_counts_the_rest(model, tmp_path, capsys):
    """.opus, .oga, .aif and .aiff are collected (libsndfile decodes them); a .txt and a .mean.npy are
    ignored and counted. The list comes from libsndfile itself (its major formats' extensions)."""
    sf = pytest.importorskip("soundfile")
    from cmir_tf.audio import decoding as audio

    exts = audio.audio_extensions()
    assert {".opus", ".oga", ".ogg", ".aif", ".aiff", ".wav", ".flac", ".mp3", ".caf", ".w64"} <= set(exts)
    assert ".raw" not in exts
    src = tmp_path / "music"
    src.mkdir()
    x = 0.3 * np.sin(2 * np.pi * 330 * np.arange(3 * 48000) / 48000)
    for name, fmt, sub in (("a.opus", "OGG", "OPUS"), ("b.oga", "OGG", "VORBIS"), ("c.aif", "AIFF", "PCM_16"),
                           ("d.aiff", "AIFF", "PCM_24")):
        sf.write(str(src / name), x, 48000, format=fmt, subtype=sub)
    (src / "notes.txt").write_text("x")
    (src / "e.mean.npy").write_bytes(b"")
    out, enc = model
    code, err = _run_cli(out, [src], tmp_path / "emb", capsys)
    assert code == 0, err
    assert "4 embedded" in err and "2 file(s) in the folders ignored" in err
    embedder = EM.Embedder(out)
    for stem in "abcd":
        want = _reference(enc, embedder.load_mel(next(src.glob(stem + ".*"))))[1]
        np.testing.assert_allclose(np.load(tmp_path / "emb" / f"{stem}.mean.npy"), want, atol=1e-5)


def test_a_wav_whose_name_is_not_utf8_is_embedded_under_the_same_bytes(model, tmp_path, capsys):
    """A file name of Latin-1 bytes (b'caf\\xe9.wav', refused before: soundfile encodes str names
    strictly): embedded (exit 0), its outputs named with the same bytes; a collision names it."""
    out, enc = model
    src = os.path.join(os.fsencode(tmp_path), b"in")
    os.mkdir(src)
    wav = os.fsdecode(os.path.join(src, b"caf\xe9.wav"))  # the str os.walk gives: surrogate-escaped
    _write_wav(wav, 3.0, 1)
    dst = tmp_path / "emb"
    with pytest.raises(ConfigError, match="would both be written to caf"):
        EM.collect_inputs([os.fsdecode(src), wav])
    code, err = _run_cli(out, [os.fsdecode(src)], dst, capsys)
    assert code == 0, err
    assert sorted(os.listdir(os.fsencode(dst))) == sorted([b"caf\xe9.npy", b"caf\xe9.mean.npy",
                                                           os.fsencode(embed_folder.MANIFEST)])
    want = _reference(enc, EM.Embedder(out).load_mel(wav))[1]
    np.testing.assert_allclose(np.load(os.path.join(os.fsencode(dst), b"caf\xe9.mean.npy")), want, atol=1e-5)
