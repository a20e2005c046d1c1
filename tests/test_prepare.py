"""prepare.py: split, CF, word2vec, records, hostile input, resume, determinism."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cmir_tf.data.melon import MelonLayout, load_mel, read_song_meta
from cmir_tf.data.tfrecords import parse_example_numpy
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.prepare import main, prepare, shard_writer
from cmir_tf.synth import make_synthetic_melon, plant_hostile

SPLITS = ("train", "val", "test")


def _records(out, manifest=None):
    """{song_id: parsed record} and {song_id: split} of every shard the manifest lists."""
    manifest = manifest or json.load(open(os.path.join(out, "manifest.json")))
    recs, split_of = {}, {}
    for s in SPLITS:
        for name in manifest["shards"][s]:
            comp = "GZIP" if name.endswith(".gz") else ""
            for raw in tf.data.TFRecordDataset(os.path.join(out, s, name), compression_type=comp):
                r = parse_example_numpy(raw.numpy())
                assert r["song_id"] not in recs, "a song written twice"
                recs[r["song_id"]] = r
                split_of[r["song_id"]] = s
    return recs, split_of


def _expected_songs(melon):
    """Songs in some playlist with ≥ 1 genre (independent of prepare's code)."""
    meta = json.load(open(os.path.join(melon, "song_meta.json"), encoding="utf-8"))
    first = {}
    for e in meta:
        first.setdefault(e["id"], e)
    in_pl = {s for f in SPLITS for p in json.load(open(os.path.join(melon, f"{f}.json"))) for s in p["songs"]}
    return {i for i, e in first.items() if i in in_pl
            and (e.get("song_gn_gnr_basket") or e.get("song_gn_dtl_gnr_basket"))}, first


def _stat(out):
    return {(s, f): (os.stat(os.path.join(out, s, f)).st_ino, os.stat(os.path.join(out, s, f)).st_mtime_ns)
            for s in SPLITS for f in os.listdir(os.path.join(out, s))}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_melon")
    make_synthetic_melon(root, songs=200, playlists=100, seed=7)
    planted = plant_hostile(root, seed=7)
    out = tmp_path_factory.mktemp("hostile_prepared")
    manifest = prepare(root, out, workers=1, seed=7, shard_size=50, progress=False, verbose=False)
    return root, out, planted, manifest


# ------------------------------------------------------------------------------------------- layout
def test_prepared_folder_matches_the_contract(prepared_data, synth_melon):
    out = str(prepared_data)
    m = json.load(open(os.path.join(out, "manifest.json")))
    for key in ("counts", "skipped", "params", "versions", "shards", "n_genres", "cf_dim", "w2v_dim"):
        assert key in m
    assert m["cf_dim"] == 300 and m["w2v_dim"] == 200 and m["params"]["seed"] == 0
    assert m["versions"]["implicit"] and m["versions"]["gensim"]
    splits = json.load(open(os.path.join(out, "splits.json")))
    recs, split_of = _records(out, m)
    for s in SPLITS:
        assert m["counts"][s] == len(splits[s]) == sum(1 for v in split_of.values() if v == s)
        assert sorted(k for k, v in split_of.items() if v == s) == splits[s]
        for i, name in enumerate(m["shards"][s]):
            assert name == f"{s}-{i:05d}-of-{len(m['shards'][s]):05d}.tfrecord"
    assert len(m["shards"]["train"]) >= 3
    assert not [f for s in SPLITS for f in os.listdir(os.path.join(out, s)) if f.endswith(".tmp")]
    # every song is either written or skipped with a reason
    expected, _ = _expected_songs(synth_melon)
    skipped = {d["song_id"]: d["reason"] for d in m["skipped"]}
    assert set(recs) == expected
    assert set(skipped) == set(range(300)) - expected and set(skipped.values()) == {"no_playlist"}


def test_records_hold_the_songs_mel_genres_and_cf(prepared_data, synth_melon):
    out = str(prepared_data)
    recs, split_of = _records(out)
    vocab = json.load(open(os.path.join(out, "vocab.json")))
    assert [v["index"] for v in vocab] == list(range(len(vocab)))
    code_index = {v["code"]: v["index"] for v in vocab}
    names = json.load(open(os.path.join(synth_melon, "genre_gn_all.json"), encoding="utf-8"))
    assert all(v["name"] == names[v["code"]] for v in vocab)
    songs, _ = read_song_meta(os.path.join(synth_melon, "song_meta.json"))
    cf_ids = np.load(os.path.join(out, "cf_song_ids.npy"))
    cf = np.load(os.path.join(out, "cf_factors.npy"))
    assert cf.shape == (len(cf_ids), 300) and cf.dtype == np.float32 and np.isfinite(cf).all()
    assert sorted(cf_ids.tolist()) == sorted(k for k, s in split_of.items() if s != "test")
    cf_row = {int(s): i for i, s in enumerate(cf_ids)}
    lay = MelonLayout(synth_melon)
    for sid, r in recs.items():
        e = songs[sid]
        assert r["genres"].tolist() == [code_index[c] for c in e.genres]
        if split_of[sid] == "test":
            assert r["cf"].size == 0  # cold start
        else:
            np.testing.assert_array_equal(r["cf"], cf[cf_row[sid]])
        assert np.isfinite(r["mel"]).all()
    for sid in list(recs)[:20]:  # mel = the file's values, time-major, to float16 precision
        np.testing.assert_array_equal(recs[sid]["mel"], load_mel(lay.mel_path(sid)).astype(np.float16))


def test_word2vec_rows_are_aligned_with_the_vocabulary(prepared_data):
    """A detailed genre's row is closer to its own major's row than to the other majors' (permuted → fails)."""
    vocab = json.load(open(os.path.join(prepared_data, "vocab.json")))
    w = np.load(os.path.join(prepared_data, "word2vec.npy"))
    assert w.shape == (len(vocab), 200) and w.dtype == np.float32
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    majors = {v["code"][:4]: v["index"] for v in vocab if v["code"].endswith("00")}
    hits = total = 0
    for v in vocab:
        if v["code"].endswith("00") or v["code"][:4] not in majors:
            continue
        sims = {p: float(w[v["index"]] @ w[i]) for p, i in majors.items()}
        hits += max(sims, key=sims.get) == v["code"][:4]
        total += 1
    assert total > 20 and hits / total > 0.8


def test_cf_vectors_carry_playlist_co_occurrence(prepared_data, synth_melon):
    """Songs sharing playlists have more similar CF vectors than random train/val pairs."""
    ids = np.load(os.path.join(prepared_data, "cf_song_ids.npy"))
    f = np.load(os.path.join(prepared_data, "cf_factors.npy"))
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    row = {int(s): i for i, s in enumerate(ids)}
    co, rnd = [], []
    rng = np.random.default_rng(0)
    for s in SPLITS:
        for p in json.load(open(os.path.join(synth_melon, f"{s}.json"))):
            r = [row[x] for x in p["songs"] if x in row]
            for a, b in zip(r[:-1], r[1:]):
                co.append(f[a] @ f[b])
                rnd.append(f[rng.integers(len(ids))] @ f[rng.integers(len(ids))])
    assert np.mean(co) > np.mean(rnd) + 0.1


# -------------------------------------------------------------------------------------------- split
def test_split_is_80_10_10_and_stratified_on_genres(tmp_path):
    make_synthetic_melon(tmp_path / "m", songs=4000, playlists=1500, seed=3, mels=False)
    m = prepare(tmp_path / "m", tmp_path / "p", seed=3, metadata_only=True, cf_iterations=2, w2v_epochs=1,
                cf_dim=8, w2v_dim=8, progress=False, verbose=False)
    splits = json.load(open(tmp_path / "p" / "splits.json"))
    n = sum(len(v) for v in splits.values())
    assert n > 3000 and m["counts"] == {s: len(splits[s]) for s in SPLITS}
    assert abs(len(splits["train"]) / n - 0.8) < 0.005
    assert abs(len(splits["val"]) / n - 0.1) < 0.005 and abs(len(splits["test"]) / n - 0.1) < 0.005
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    songs, _ = read_song_meta(tmp_path / "m" / "song_meta.json")
    split_of = {sid: s for s in SPLITS for sid in splits[s]}
    per_genre = {}
    for sid, s in split_of.items():
        for c in songs[sid].genres:
            per_genre.setdefault(c, []).append(s)
    checked, z = 0, []
    for c, ss in per_genre.items():
        if len(ss) < 60:
            continue
        checked += 1
        for s, r in zip(SPLITS, (0.8, 0.1, 0.1)):
            z.append(abs(ss.count(s) - r * len(ss)) / np.sqrt(len(ss) * r * (1 - r)))
    # |deviation| of each genre's share in z units (binomial sd): a random 80/10/10 split gives a mean of
    # ~0.75 here (measured over 3 seeds: 0.753, 0.761, 0.755; max 2.7-3.3); iterative stratification 0.16.
    assert np.mean(z) < 0.35 and np.max(z) < 2.5, (np.mean(z), np.max(z))
    assert checked >= 15
    assert m["params"]["cf_dim"] == 8 and os.listdir(tmp_path / "p" / ".prepare")  # metadata path ran
    assert not any(os.path.exists(tmp_path / "p" / s) for s in SPLITS)  # no shard in metadata-only mode


# ------------------------------------------------------------------------------------------ hostile
def test_hostile_input_every_fault_skipped_with_its_reason_every_good_song_kept(hostile):
    root, out, planted, m = hostile
    skipped = {d["song_id"]: d["reason"] for d in m["skipped"]}
    for sid, reason in planted["expected_skips"].items():
        assert skipped.get(sid) == reason, (sid, reason, skipped.get(sid))
    reasons = set(planted["expected_skips"].values())
    assert reasons == {"missing", "unreadable", "pickled", "bad_dtype", "bad_shape", "wrong_bands", "too_short",
                       "non_finite", "out_of_range", "no_genres"}
    expected, _ = _expected_songs(root)
    good = expected - set(planted["expected_skips"])
    recs, _ = _records(out, m)
    assert set(recs) == good  # each good song kept, nothing else
    splits = json.load(open(os.path.join(out, "splits.json")))
    assert set().union(*map(set, splits.values())) == good
    assert set(skipped) | good == set(range(200))
    assert m["stats"]["unknown_playlist_entries"] == planted["unknown_entries"]
    assert m["stats"]["duplicate_song_meta"] == len(planted["duplicates"])
    for r in recs.values():
        assert np.isfinite(r["mel"]).all() and r["n_frames"] >= 256


def test_hostile_more_than_10_genres_kept_whole_and_duplicates_keep_first(hostile):
    root, out, planted, m = hostile
    recs, _ = _records(out, m)
    vocab = {v["code"]: v["index"] for v in json.load(open(os.path.join(out, "vocab.json")))}
    meta = json.load(open(os.path.join(root, "song_meta.json"), encoding="utf-8"))
    first = {}
    for e in meta:
        first.setdefault(e["id"], e)
    for sid in planted["many_genres"]:
        codes = first[sid]["song_gn_gnr_basket"] + first[sid]["song_gn_dtl_gnr_basket"]
        assert len(codes) == 12 and recs[sid]["genres"].tolist() == [vocab[c] for c in codes]
    assert m["stats"]["songs_over_max_genres"] == 2
    for sid, codes in planted["duplicates"].items():
        assert recs[sid]["genres"].tolist() == [vocab[c] for c in codes]


def test_hostile_stray_files_are_ignored_and_summary_printed(hostile, tmp_path, capsys):
    root, out, planted, m = hostile
    assert all(os.path.exists(p) for p in planted["stray"])
    stray_id = int(os.path.basename(planted["stray"][-1])[:-4])
    recs, _ = _records(out, m)
    assert stray_id not in recs and stray_id not in {d["song_id"] for d in m["skipped"]}
    main(["--melon", str(root), "--out", str(tmp_path / "p"), "--seed", "7", "--shard-size", "50",
          "--no-progress", "--cf-iterations", "5"])
    printed = capsys.readouterr().out
    assert "records written: train" in printed and "pickled 2" in printed and "non_finite 3" in printed
    assert "naming unknown songs, ignored: 6" in printed and "duplicate entries ignored: 2" in printed


def test_pickled_mel_is_never_executed_by_prepare(tmp_path):
    class_src = tmp_path / "evil_mod.py"
    marker = tmp_path / "EXECUTED"
    class_src.write_text(f"class Evil:\n    def __reduce__(self):\n        return (open, ({str(marker)!r}, 'w'))\n")
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("evil_mod", class_src)
    mod = importlib.util.module_from_spec(spec); sys.modules["evil_mod"] = mod; spec.loader.exec_module(mod)
    make_synthetic_melon(tmp_path / "m", songs=20, playlists=10, seed=1)
    in_pl = sorted({s for f in SPLITS for p in json.load(open(tmp_path / "m" / f"{f}.json")) for s in p["songs"]})
    victim = in_pl[0]
    path = MelonLayout(tmp_path / "m").mel_path(victim)
    np.save(path, np.array([mod.Evil()], dtype=object), allow_pickle=True)
    m = prepare(tmp_path / "m", tmp_path / "p", cf_dim=4, w2v_dim=4, cf_iterations=2, progress=False,
                verbose=False)
    assert {"song_id": victim, "reason": "pickled"} in m["skipped"]
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the payload was live
    assert marker.exists()


# --------------------------------------------------------------------------- determinism and resume
def test_same_seed_same_output_whatever_the_worker_count(prepared_data, synth_melon, tmp_path):
    out = tmp_path / "again"
    prepare(synth_melon, out, workers=1, seed=0, shard_size=64, progress=False, verbose=False)
    for f in ("splits.json", "vocab.json"):
        assert open(out / f).read() == open(prepared_data / f).read()
    for f in ("word2vec.npy", "cf_song_ids.npy", "cf_factors.npy"):
        np.testing.assert_array_equal(np.load(out / f), np.load(prepared_data / f))
    m = json.load(open(out / "manifest.json"))
    for s in SPLITS:
        for name in m["shards"][s]:
            assert (out / s / name).read_bytes() == (prepared_data / s / name).read_bytes()


def test_resume_after_interruption_writes_nothing_twice_and_loses_nothing(prepared_data, synth_melon,
                                                                           tmp_path, monkeypatch):
    out = tmp_path / "p"
    real = shard_writer.write_shard
    calls = []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = f".cmir-tmp-{int(dead.stdout)}-0123abcd-"  # what a writer killed mid-shard leaves

    def dying(task):
        if len(calls) == 2:
            open(os.path.join(task["out"], task["split"], partial + task["name"]), "wb").write(b"partial")
            raise KeyboardInterrupt("killed mid-shard")
        calls.append(task["name"])
        return real(task)

    monkeypatch.setattr(shard_writer, "write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(synth_melon, out, workers=1, seed=0, shard_size=64, progress=False, verbose=False)
    assert not (out / "manifest.json").exists()
    before = _stat(out)
    finished = {k: v for k, v in before.items() if not k[1].startswith(partial)}
    assert len(finished) == 2 and any(k[1].startswith(partial) for k in before)

    rewritten = []
    monkeypatch.setattr(shard_writer, "write_shard", lambda t: rewritten.append(t["name"]) or real(t))
    m = prepare(synth_melon, out, workers=1, seed=0, shard_size=64, progress=False, verbose=False)
    after = _stat(out)
    for k, v in finished.items():
        assert after[k] == v  # same inode and mtime: not rewritten
    assert not set(rewritten) & {k[1] for k in finished}
    assert not [k for k in after if k[1].startswith(".")]  # the partial shard is gone
    ref = json.load(open(prepared_data / "manifest.json"))
    assert m["shards"] == ref["shards"] and m["counts"] == ref["counts"]
    for s in SPLITS:  # identical to an uninterrupted run
        for name in m["shards"][s]:
            assert (out / s / name).read_bytes() == (prepared_data / s / name).read_bytes()

    # a deleted finished shard is rewritten, and only it
    victim = ("train", m["shards"]["train"][1])
    os.unlink(out / victim[0] / victim[1])
    rewritten.clear()
    prepare(synth_melon, out, workers=1, seed=0, shard_size=64, progress=False, verbose=False)
    assert rewritten == [victim[1]]
    again = _stat(out)
    assert {k: v for k, v in again.items() if k != victim} == {k: v for k, v in after.items() if k != victim}
    assert (out / victim[0] / victim[1]).read_bytes() == (prepared_data / victim[0] / victim[1]).read_bytes()

    # a complete folder: a rerun writes nothing; other parameters are refused
    rewritten.clear()
    prepare(synth_melon, out, workers=1, seed=0, shard_size=64, progress=False, verbose=False)
    assert rewritten == [] and _stat(out) == again
    with pytest.raises(ConfigError, match="overwrite"):
        prepare(synth_melon, out, workers=1, seed=1, shard_size=64, progress=False, verbose=False)


# ---------------------------------------------------------------------------------------- errors/CLI
def test_bad_input_and_flags_raise_named_errors(tmp_path, capsys):
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    make_synthetic_melon(tmp_path / "m", songs=5, playlists=2, mels=False)
    os.unlink(tmp_path / "m" / "val.json")
    with pytest.raises(DataError, match="val.json"):
        prepare(tmp_path / "m", tmp_path / "out")
    with pytest.raises(ConfigError, match="workers must be ≥ 1"):  # the library names its parameter …
        prepare(tmp_path / "m", tmp_path / "out", workers=0)
    assert main(["--melon", str(tmp_path / "m"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "val.json" in err and len(err.strip().splitlines()) == 1
    assert main(["--melon", str(tmp_path / "m"), "--out", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "error: --workers must be ≥ 1" in capsys.readouterr().err  # … the command line its flag
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    helptext = capsys.readouterr().out
    for flag in ("--melon", "--out", "--workers", "--seed", "--cf-dim", "--w2v-dim", "--cf-model", "--cf-iterations",
                 "--cf-threads", "--cf-learning-rate", "--w2v-epochs", "--shard-size", "--gzip", "--metadata-only",
                 "--overwrite", "--no-progress"):
        assert flag in helptext


def test_gzip_shards_round_trip(tmp_path):
    make_synthetic_melon(tmp_path / "m", songs=30, playlists=15, seed=2)
    m = prepare(tmp_path / "m", tmp_path / "gz", compress=True, shard_size=400, cf_dim=4, w2v_dim=4, cf_iterations=2,
                progress=False, verbose=False)
    assert m["shards"]["train"] == ["train-00000-of-00001.tfrecord.gz"]
    recs, _ = _records(tmp_path / "gz", m)
    assert len(recs) == sum(m["counts"].values())


def test_both_cf_models_give_cf_dim_values_deterministically(synth_melon):
    from cmir_tf.prepare.cf import default_cf_iterations, train_cf
    from cmir_tf.prepare.song_split import load_metadata, select_songs

    meta = load_metadata(synth_melon)
    ids, _ = select_songs(meta)
    for model, threads in (("bpr", 1), ("als", 2)):
        got_ids, f, info = train_cf(meta["playlists"], ids[::2], 16, model, seed=1, threads=threads)
        assert got_ids.tolist() == ids[::2] and f.shape == (len(got_ids), 16) and f.dtype == np.float32
        assert np.isfinite(f).all() and np.abs(f).max() > 0
        assert info["iterations"] == default_cf_iterations(model, info["nnz"])
        again = train_cf(meta["playlists"], ids[::2], 16, model, seed=1, threads=threads)[1]
        np.testing.assert_array_equal(f, again)
    assert default_cf_iterations("bpr", 5_900_000) == 11 and default_cf_iterations("bpr", 4000) == 200
    assert default_cf_iterations("als", 10) == 15
    with pytest.raises(ConfigError, match="cf_model must be one of"):
        train_cf(meta["playlists"], ids, 16, "warp")


# SHA-256 prefixes of every file `prepare` writes for make_synthetic_melon(songs=80, playlists=40, seed=3),
# seed 3, shards of 40: measured alike on TensorFlow 2.21 + NumPy 2.4 + protobuf 7 (Python 3.11 and 3.13)
# and TensorFlow 2.17 + NumPy 1.26 + protobuf 4.25. CI runs this test on each of those stacks, so a
# stack whose preparation differs by one byte fails here, naming the file.
CROSS_STACK_DIGESTS = {
    "cf_factors.npy": "065c661d04e5b6f6",
    "cf_song_ids.npy": "58c7379a975d186d",
    "pairs/train/artist.npy": "000a13d64af33a3a",
    "pairs/train/genre.npy": "4d4c63b7e0c20f25",
    "pairs/train/playlist.npy": "86cec848cfb57057",
    "pairs/train/records.npy": "9e23fa593b3421be",
    "pairs/val/artist.npy": "d10ce84109bef927",
    "pairs/val/genre.npy": "83c45e5884f62fe6",
    "pairs/val/playlist.npy": "6dac861232e3e9d5",
    "pairs/val/records.npy": "be311f405029f1f4",
    "splits.json": "e1cea5a51869c2d8",
    "test/test-00000-of-00001.tfrecord": "7f4cd1a500df53b0",
    "train/train-00000-of-00002.tfrecord": "f0ed78e5f2ff5393",
    "train/train-00001-of-00002.tfrecord": "1bb6a1287d02768f",
    "val/val-00000-of-00001.tfrecord": "287965de65dc5d1e",
    "vocab.json": "59370ea74e9ebe6c",
    "word2vec.npy": "a4f89789a9e586fe",
}


def test_prepared_bytes_are_identical_on_every_supported_stack(tmp_path):
    import hashlib

    make_synthetic_melon(tmp_path / "melon", songs=80, playlists=40, seed=3)
    out = tmp_path / "out"
    prepare(tmp_path / "melon", out, workers=1, seed=3, shard_size=40, progress=False, verbose=False)
    written = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
               for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
               and not any(part.startswith(".") for part in p.relative_to(out).parts)}
    assert written == CROSS_STACK_DIGESTS
