"""Downstream protocols end to end on tiny datasets in the REAL layouts, made here.

A fake embedder whose embeddings carry the class signal (a fixed random projection of per-patch
log-spectrum statistics) must score high, and a noise embedder (random vectors seeded by the file path)
must score near chance — so each protocol measures what it claims. The playlist protocol is also
checked against a hand-worked case and an independent brute-force re-computation.
"""
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from scipy.io import wavfile

from cmir_tf import evaluate as ev
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.melon import MelonLayout, load_mel, write_json, write_mel
from cmir_tf.metrics import average_precision_at_k, ndcg_at_k

GENRES = ev.GTZAN_GENRES
FAST = ev.Params(runs=2, gtzan_max_iter=300, jamendo_max_epochs=15, jamendo_patience=5, jamendo_batch_size=8,
                 jamendo_lr=3e-3, k=10, progress=False)


# ------------------------------------------------------------------------------------ fake embedders
def _log_bands(wave, n_bands=48):
    """(n_frames, 48) log band energies: 512-sample Hann frames every 256 samples, linear bands."""
    n = 1 + (len(wave) - 512) // 256
    idx = np.arange(512)[None, :] + 256 * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(wave[idx] * np.hanning(512), axis=1)) ** 2
    bands = np.stack([b.sum(axis=1) for b in np.array_split(power[:, 1:], n_bands, axis=1)], axis=1)
    return 10 * np.log10(bands + 1e-10)


class SignalEmbedder:
    """Patch embeddings = per-patch mean of the mel bands, through a fixed random projection to 128-d."""

    def __init__(self):
        self.w = np.random.default_rng(0).normal(size=(48, 128)).astype(np.float32)
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        if str(path).endswith(".npy"):
            mel = load_mel(path)
        elif str(path).endswith(".wav"):
            mel = _log_bands(wavfile.read(path)[1].astype(np.float32) / 32768)
        else:  # mp3 through the package's decoder
            from cmir_tf.audio import load_audio

            mel = _log_bands(load_audio(path))
        p = max(1, len(mel) // 256)
        stats = mel[: p * 256].reshape(p, 256, 48).mean(axis=1) if len(mel) >= 256 else mel.mean(0, keepdims=True)
        return stats @ self.w


class NoiseEmbedder:
    """Random patch embeddings, deterministic per file name: no information about the content."""

    calls = 0

    def __call__(self, path):
        assert os.path.isfile(path)
        seed = int(hashlib.sha1(os.path.basename(str(path)).encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=(2, 128)).astype(np.float32)


def _model(embed, name="fake"):
    return ev.Model(name, embed, key=name)


# ------------------------------------------------------------------------------------------- GTZAN
def _tone(freqs, seconds, rate, rng):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * rng.uniform(0.98, 1.02) * t + rng.uniform(0, 6))
            for f in freqs)
    return x + 0.02 * rng.normal(size=t.size)


@pytest.fixture(scope="module")
def gtzan(tmp_path_factory):
    """genres/<g>/<g>.000NN.wav (22050 Hz, 16-bit, 9 s) and the three filtered split lists."""
    root = tmp_path_factory.mktemp("gtzan")
    splits = root / "splits"
    splits.mkdir()
    rng = np.random.default_rng(0)
    lists = {"train": [], "valid": [], "test": []}
    for gi, g in enumerate(GENRES):
        (root / "genres" / g).mkdir(parents=True)
        f0 = 150 + 90 * gi
        for n in range(8):
            rel = f"{g}/{g}.{n:05d}.wav"
            x = _tone([f0, 2 * f0, 3 * f0], 9.0, 22050, rng)
            wavfile.write(root / "genres" / rel, 22050, (x * 20000).astype(np.int16))
            lists["train" if n < 4 else "valid" if n < 5 else "test"].append(rel)
    for split, name in ev.GTZAN_LISTS.items():
        (splits / name).write_text("\n".join(lists[split]) + "\n")
    return root, splits


def test_gtzan_reads_the_real_layout(gtzan):
    root, splits = gtzan
    split = ev.read_gtzan(root, splits)
    assert {s: len(v) for s, v in split.items()} == {"train": 40, "valid": 10, "test": 30}
    path, genre = split["test"][0]
    assert genre == "blues" and path == root / "genres" / "blues" / "blues.00005.wav"
    # the folder holding blues/, classical/, ... directly is accepted too
    assert ev.read_gtzan(root / "genres", splits)["test"][0][0] == path


def test_gtzan_signal_high_noise_chance(gtzan):
    root, splits = gtzan
    good = ev.evaluate_gtzan(root, splits, _model(SignalEmbedder()), params=FAST)
    assert good["n_train_tracks"] == 40 and good["n_test_tracks"] == 30
    # every patch is a training instance: 9 s at 22050 Hz = 774 frames of 256 samples = 3 patches
    assert good["n_train_instances"] == 40 * 3
    assert len(good["runs"]) == 2 and good["mean"] >= 90.0
    noise = ev.evaluate_gtzan(root, splits, _model(NoiseEmbedder()), params=FAST)
    assert noise["mean"] <= 35.0  # chance is 10 %


def test_gtzan_errors_name_missing_files(gtzan, tmp_path):
    root, splits = gtzan
    with pytest.raises(DataError, match="train_filtered.txt: GTZAN split list is missing"):
        ev.read_gtzan(root, tmp_path)
    (tmp_path / "train_filtered.txt").write_text("blues/blues.00000.wav\nrock/rock.00099.wav\n")
    (tmp_path / "test_filtered.txt").write_text("blues/blues.00005.wav\n")
    with pytest.raises(DataError, match=r"1 GTZAN files listed in .*train_filtered.txt.*rock\.00099\.wav"):
        ev.read_gtzan(root, tmp_path)
    (tmp_path / "train_filtered.txt").write_text("blues.00000.wav\n")
    with pytest.raises(DataError, match=r"train_filtered.txt:1: expected a line like"):
        ev.read_gtzan(root, tmp_path)
    with pytest.raises(DataError, match="--gtzan .*folder does not exist"):
        ev.read_gtzan(tmp_path / "nope", splits)


def test_cache_embeds_a_dataset_once_per_model(gtzan, tmp_path):
    root, splits = gtzan
    fake = SignalEmbedder()
    p = ev.Params(runs=1, gtzan_max_iter=50, progress=False)
    first = ev.evaluate_gtzan(root, splits, _model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 70 and first["embedded"] == 70
    second = ev.evaluate_gtzan(root, splits, _model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 70 and second["embedded"] == 0  # all from the cache
    assert second["runs"] == first["runs"]
    assert len(list((tmp_path / "fake" / "gtzan").rglob("*.npy"))) == 70
    # another model has its own cache; a modified file is embedded again
    other = SignalEmbedder()
    ev.evaluate_gtzan(root, splits, ev.Model("other", other, key="other"), params=p, cache_dir=tmp_path)
    assert other.calls == 70
    wav = root / "genres" / "rock" / "rock.00000.wav"
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = ev.evaluate_gtzan(root, splits, _model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 71 and third["embedded"] == 1


def test_unreadable_files_are_skipped_and_reported(gtzan, tmp_path, capsys):
    root, splits = gtzan
    bad = root / "genres" / "jazz" / "jazz.00006.wav"
    fake = SignalEmbedder()

    def embed(path):
        if path == str(bad):
            raise DataError(f"{path}: cannot decode audio")
        return fake(path)

    def embed_many(paths):  # the batched interface of an exported model
        for p in paths:
            yield (p, None, DataError(f"{p}: cannot decode audio")) if p == str(bad) else (p, fake(p), None)

    p = ev.Params(runs=1, gtzan_max_iter=50, progress=False)
    one = ev.evaluate_gtzan(root, splits, ev.Model("a", embed, "a"), params=p, cache_dir=tmp_path)
    many = ev.evaluate_gtzan(root, splits, ev.Model("b", embed, "b", embed_many), params=p, cache_dir=tmp_path)
    for r in (one, many):
        assert r["skipped"] == [{"path": str(bad), "reason": f"{bad}: cannot decode audio"}]
        assert r["n_test_tracks"] == 29 and r["embedded"] == 69
    assert one["runs"] == many["runs"]
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().err
    # the batched results were cached like the single ones
    assert len(list((tmp_path / "b" / "gtzan").rglob("*.npy"))) == 69


def test_model_fingerprint_covers_weights(tmp_path):
    for name, weights in (("a", b"1"), ("b", b"2")):
        sm = tmp_path / name / "saved_model" / "3"
        (sm / "variables").mkdir(parents=True)
        (sm / "saved_model.pb").write_bytes(b"same graph")
        (sm / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    assert ev.model_fingerprint(tmp_path / "a") != ev.model_fingerprint(tmp_path / "b")
    assert ev.model_fingerprint(tmp_path / "a") == ev.model_fingerprint(tmp_path / "a" / "saved_model" / "3")
    with pytest.raises(ConfigError, match="--model .*no saved_model.pb"):
        ev.model_fingerprint(tmp_path)


# ----------------------------------------------------------------------------------------- Jamendo
JAMENDO_TAGS = {"genre---rock": 300, "genre---pop": 700, "genre---jazz": 1500,
                "instrument---piano": 2500, "instrument---guitar": 3500, "instrument---voice": 5000}

@pytest.fixture(scope="module")
def jamendo(tmp_path_factory):
    """NN/ID.mp3 (44.1 kHz, 4.5 s, encoded by libsndfile) and CRLF TSVs for genre and instrument."""
    import soundfile
    root = tmp_path_factory.mktemp("jamendo")
    audio, splits = root / "audio", root / "split-0"
    splits.mkdir()
    rng = np.random.default_rng(1)
    genres = [t for t in JAMENDO_TAGS if t.startswith("genre")]
    instruments = [t for t in JAMENDO_TAGS if t.startswith("instrument")]
    tracks = []
    for n in range(75):
        tid = 1000 + n
        g = [genres[n % 3]] + (["genre---rare"] if n < 2 else [])  # 'rare' never appears in test
        inst = [t for t in instruments if rng.random() < 0.5] or [instruments[n % 3]]
        rel = f"{tid % 100:02d}/{tid}.mp3"
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        x = 0.5 * _tone([JAMENDO_TAGS[t] for t in g + inst if t in JAMENDO_TAGS], 4.5, 44100, rng)
        soundfile.write(audio / rel, x.astype(np.float32), 44100, format="MP3")
        tracks.append((tid, rel, g, inst))
    for cat, col in (("genre", 2), ("instrument", 3)):
        for split, sl in (("train", slice(0, 40)), ("validation", slice(40, 55)), ("test", slice(55, 75))):
            rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
            for tr in tracks[sl]:
                rows.append("\t".join([f"track_{tr[0]:07d}", "artist_1", "album_1", tr[1], "4.5", *tr[col]]))
            (splits / f"autotagging_{cat}-{split}.tsv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return audio, splits


def test_jamendo_reads_crlf_tsvs(jamendo):
    audio, splits = jamendo
    split = ev.read_jamendo(audio, splits, "instrument")
    assert [len(split[s]) for s in ev.JAMENDO_SPLITS] == [40, 15, 20]
    tid, path, tags = split["train"][0]
    assert tid == "track_0001000" and path == audio / "00" / "1000.mp3"
    assert tags and all(t.startswith("instrument---") and not t.endswith("\r") for t in tags)
    assert ev.read_jamendo(audio, splits, "genre")["train"][0][2] == ["genre---rock", "genre---rare"]


@pytest.mark.slow
def test_jamendo_signal_high_noise_chance(jamendo):
    audio, splits = jamendo
    good = ev.evaluate_jamendo(audio, splits, _model(SignalEmbedder()), categories=["genre", "instrument"],
                               params=FAST)
    for cat in ("genre", "instrument"):
        assert len(good[cat]["runs"]) == 2 and good[cat]["mean"] >= 0.9, good[cat]
    # a tag with no test track has no ROC-AUC: left out and listed
    assert good["genre"]["excluded_tags"] == ["genre---rare"]
    assert good["genre"]["n_tags"] == 4 and good["genre"]["n_tags_evaluated"] == 3
    noise = ev.evaluate_jamendo(audio, splits, _model(NoiseEmbedder()), categories=["genre", "instrument"],
                                params=dataclasses.replace(FAST, runs=1))
    for cat in ("genre", "instrument"):
        assert 0.25 <= noise[cat]["mean"] <= 0.75, noise[cat]


def test_jamendo_errors(jamendo, tmp_path):
    audio, splits = jamendo
    with pytest.raises(DataError, match="autotagging_moodtheme-train.tsv: MTG-Jamendo split file is missing"):
        ev.read_jamendo(audio, splits, "moodtheme")
    with pytest.raises(ConfigError, match="unknown category 'mood'"):
        ev.read_jamendo(audio, splits, "mood")
    bad = tmp_path / "split"
    bad.mkdir()
    for s in ev.JAMENDO_SPLITS:
        (bad / f"autotagging_genre-{s}.tsv").write_bytes(
            b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\ntrack_1\ta\tb\t01/1.mp3\t3.0\tgenre---rock\r\n")
    with pytest.raises(DataError, match=r"1 MTG-Jamendo audio files listed in .*autotagging_genre-train.tsv.*01/1\.mp3"):
        ev.read_jamendo(audio, bad, "genre")
    (bad / "autotagging_genre-train.tsv").write_bytes(b"ID,PATH\r\n1,01/1.mp3\r\n")
    with pytest.raises(DataError, match="header is not TRACK_ID ARTIST_ID"):
        ev.read_jamendo(audio, bad, "genre")


# --------------------------------------------------------------------------------------- playlists
def _make_melon(root, rng, n_genres=10, per_genre=20):
    """Melon layout with planted structure: a song's mel is loud in its genre's 4-band block; a playlist
    takes its songs from one genre. Returns (melon root, prepared dir)."""
    layout = MelonLayout(root / "melon")
    meta, splits, by_genre = [], {"train": [], "val": [], "test": []}, {}
    sid = 0
    for g in range(n_genres):
        for n in range(per_genre):
            sid += 1
            # a song's own timbre (per-band offsets) spreads the cosines within a genre
            mel = -30 + 5 * rng.normal(size=(48, 1)) + 3 * rng.normal(size=(48, 300))
            mel[4 * g: 4 * g + 4] += 30
            write_mel(layout, sid * 37, mel)  # ids spread over several arena_mel/ folders
            meta.append({"id": sid * 37, "song_gn_gnr_basket": [f"GN{g + 1:02d}00"], "song_gn_dtl_gnr_basket": []})
            splits["train" if n < 12 else "val" if n < 16 else "test"].append(sid * 37)
            by_genre.setdefault(g, []).append(sid * 37)
    playlists = []
    for pid in range(80):
        g = int(rng.integers(n_genres))
        songs = [int(s) for s in rng.choice(by_genre[g], size=6, replace=False)]
        playlists.append({"id": pid, "songs": songs, "tags": [], "plylst_title": ""})
    test_songs = splits["test"]
    playlists += [
        {"id": 900, "songs": test_songs[:3]},  # only test songs: no query
        {"id": 901, "songs": splits["train"][:4]},  # no test song: not part of the task
        {"id": 902, "songs": [999_999, splits["train"][0], splits["train"][0], test_songs[0]]},  # unknown + dup
    ]
    write_json(layout.song_meta, meta)
    write_json(layout.genres, {f"GN{g + 1:02d}00": f"genre {g}" for g in range(n_genres)})
    write_json(layout.playlists("train"), playlists[:60])
    write_json(layout.playlists("val"), playlists[60:75])
    write_json(layout.playlists("test"), playlists[75:])
    prepared = root / "prepared"
    prepared.mkdir()
    write_json(prepared / "splits.json", splits)
    return layout, prepared


@pytest.fixture(scope="module")
def melon(tmp_path_factory):
    return _make_melon(tmp_path_factory.mktemp("melon"), np.random.default_rng(2))


def test_playlist_task_queries_and_relevant(melon):
    layout, prepared = melon
    task = ev.read_playlist_task(prepared, layout.root)
    splits = json.loads((prepared / "splits.json").read_text())
    test = set(splits["test"])
    by_id = {p: (q, r) for p, q, r in task["playlists"]}
    assert 900 not in by_id and 901 not in by_id and task["n_no_query"] == 1
    assert by_id[902] == ([splits["train"][0]], [splits["test"][0]])  # unknown song dropped, duplicate once
    for _, queries, relevant in task["playlists"]:
        assert relevant and set(relevant) <= test and queries and not set(queries) & test
    assert task["n_with_test"] == len(task["playlists"]) + 1
    assert task["test_ids"] == sorted(test)


def test_playlist_protocol_hand_worked():
    vectors = {1: [1, 0], 2: [0, 1], 3: [-1, 0], 4: [0.8, 0.6], 10: [1, 0.1], 11: [0.6, 0.8]}
    vectors = {s: np.asarray(v, np.float32) for s, v in vectors.items()}
    # query 10 → [1, 4]; query 11 → [4, 2]; counts 4:2, 1:1 (cos .995), 2:1 (cos .8) → [4, 1]
    playlists = [("A", [10, 11], [1]), ("B", [10], [3]), ("C", [99], [2])]  # C: query without a vector
    r = ev.playlist_protocol(playlists, vectors, [1, 2, 3, 4], ev.Params(k=2, progress=False))
    assert r["n_playlists"] == 2 and r["n_test_songs"] == 4 and r["n_query_songs"] == 2
    assert r["ndcg"] == pytest.approx((1 / np.log2(3) + 0) / 2)
    assert r["map"] == pytest.approx((0.5 + 0) / 2)


def _brute_force_playlists(task, vectors, k):
    cands = np.asarray(task["test_ids"])
    c = np.stack([vectors[s] for s in cands])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    nd, ap = [], []
    for _, queries, relevant in task["playlists"]:
        count, sims = {}, {}
        for q in queries:
            cos = c @ (vectors[q] / np.linalg.norm(vectors[q]))
            for i in np.argsort(-cos)[:k]:
                count[cands[i]] = count.get(cands[i], 0) + 1
                sims[cands[i]] = sims.get(cands[i], 0.0) + cos[i]
        ranked = sorted(count, key=lambda s: (-count[s], -sims[s], s))[:k]
        nd.append(ndcg_at_k(ranked, relevant, k))
        ap.append(average_precision_at_k(ranked, relevant, k))
    return np.mean(nd), np.mean(ap)


def test_playlists_signal_high_noise_chance(melon):
    layout, prepared = melon
    fake = SignalEmbedder()
    keep = {}
    good = ev.evaluate_playlists(prepared, layout.root, _model(fake), params=FAST, _keep_embeddings=keep)
    task = ev.read_playlist_task(prepared, layout.root)
    assert good["n_playlists"] == len(task["playlists"]) and good["n_no_query"] == 1
    # the test songs and the queries are embedded, nothing else
    assert fake.calls == len(set(task["test_ids"]) | {q for _, qs, _ in task["playlists"] for q in qs})
    vectors = {s: fake(layout.mel_path(s)).mean(axis=0) for s in json.loads((prepared / "splits.json").read_text())["train"]
               + task["test_ids"] + json.loads((prepared / "splits.json").read_text())["val"]}
    want_ndcg, want_map = _brute_force_playlists(task, vectors, FAST.k)
    assert good["ndcg"] == pytest.approx(want_ndcg, abs=1e-9) and good["map"] == pytest.approx(want_map, abs=1e-9)
    # measured: signal 0.69-0.73, random and noise 0.07-0.14 (three fixture seeds)
    assert good["ndcg"] >= 0.55 and good["map"] >= 0.45 and good["random"]["ndcg"] <= 0.2
    noise = ev.evaluate_playlists(prepared, layout.root, _model(NoiseEmbedder()), params=FAST)
    assert noise["ndcg"] <= 0.25 and abs(noise["ndcg"] - noise["random"]["ndcg"]) <= 0.1
    assert noise["random"] == good["random"]  # the seeded baseline does not depend on the model
    assert len(keep["melon"]) == 40


def test_playlist_errors(melon, tmp_path):
    layout, prepared = melon
    with pytest.raises(DataError, match="splits.json: missing"):
        ev.read_playlist_task(tmp_path, layout.root)
    with pytest.raises(DataError, match="--melon .*folder does not exist"):
        ev.read_playlist_task(prepared, tmp_path / "nope")
    with pytest.raises(DataError, match="none of train.json"):
        ev.read_playlist_task(prepared, tmp_path)


# ------------------------------------------------------------------------------------ report and CLI
def test_all_writes_tables_and_plots(gtzan, melon, tmp_path, monkeypatch, capsys):
    root, splits = gtzan
    layout, prepared = melon
    fakes = {"contr_cf_g": SignalEmbedder(), "noise": NoiseEmbedder()}
    monkeypatch.setattr(ev, "load_model", lambda name, d: ev.Model(name, fakes[name], key=name))
    out = tmp_path / "report"
    ev.main(["all", "--models", "contr_cf_g=x", "noise=y", "--gtzan", str(root), "--gtzan-splits", str(splits),
             "--data", str(prepared), "--melon", layout.root, "--runs", "2", "--k", "10", "--quiet",
             "--cache", str(tmp_path / "cache"), "--out", str(out)])
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
    ev.write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| Model | Genre | Mood | Instrument | Paper (Genre/Mood/Instrument) |" in md
    assert "| contr_g | 0.850 ± 0.001 | 0.730 ± 0.001 | 0.800 ± 0.001 | 0.847 / 0.732 / 0.797 |" in md
    assert "| mine | 0.500 ± 0.001 | — | 0.600 ± 0.001 | — |" in md
    assert json.loads((tmp_path / "report.json").read_text())["plots"] == [str(tmp_path / "tasks.png")]


def test_single_task_cli_prints_and_writes_json(gtzan, melon, tmp_path, monkeypatch, capsys):
    root, splits = gtzan
    layout, prepared = melon
    monkeypatch.setattr(ev, "load_model", lambda name, d: ev.Model(name, SignalEmbedder(), key="sig"))
    ev.main(["gtzan", "--model", "m", "--gtzan", str(root), "--splits", str(splits), "--runs", "2", "--quiet",
             "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "gtzan.json").read_text())
    assert saved["params"]["runs"] == 2 and len(saved["result"]["runs"]) == 2
    assert f"GTZAN accuracy: {saved['result']['mean']:.2f} ± " in capsys.readouterr().out
    ev.main(["playlists", "--model", "m", "--data", str(prepared), "--melon", layout.root, "--k", "10", "--quiet",
             "--no-cache", "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "playlists.json").read_text())["result"]
    assert f"nDCG@10 {saved['ndcg']:.4f}" in capsys.readouterr().out
    assert not (tmp_path / "cache" / "sig" / "melon").exists()  # --no-cache wrote nothing


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ev.main(["gtzan", "--model", str(tmp_path), "--gtzan", str(tmp_path), "--splits", str(tmp_path)])
    assert e.value.code == 2 and "no saved_model.pb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["all", "--models", "a=" + str(tmp_path), "--gtzan", str(tmp_path)])
    assert "no saved_model.pb" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--gtzan and --gtzan-splits go together"):
        ev._pair(ev._parser().parse_args(["all", "--models", "a=b", "--gtzan", "x"]), "gtzan", "gtzan_splits",
                 "--gtzan", "--gtzan-splits")
    with pytest.raises(SystemExit) as e:
        ev.main(["--help"])
    assert e.value.code == 0 and "gtzan,jamendo,playlists,all" in capsys.readouterr().out


# ------------------------------------------------------------------- end to end through a real export
@pytest.mark.slow
def test_cli_through_an_exported_model(gtzan, melon, tmp_path, capsys):
    """`all` with --models NAME=EXPORT_DIR: the Embedder of a real export (a randomly initialised audio
    encoder) embeds GTZAN wavs (22050 Hz → 16 kHz) and Melon mels; the cache holds exactly its outputs,
    and a second run embeds nothing."""
    tf = pytest.importorskip("tensorflow")
    from cmir_tf import export
    from cmir_tf.embed import Embedder
    from cmir_tf.encoders import AudioEncoder

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
    ev.main(argv)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    g, p = report["gtzan"]["rand"], report["playlists"]["rand"]
    assert g["embedded"] == 70 and p["embedded"] == p["n_test_songs"] + p["n_query_songs"]
    # 9 s at 16 kHz = 563 centred frames → 2 non-overlapping 256-frame patches per track
    assert g["n_train_instances"] == 40 * 2 and 0 <= g["mean"] <= 100
    assert 0 <= p["ndcg"] <= 1 and 0 <= p["map"] <= 1
    # the cached embeddings are the Embedder's own output for each file
    key = report["models"]["rand"]
    assert key == ev.model_fingerprint(tmp_path / "exp")
    embedder = Embedder(str(tmp_path / "exp"))
    cache = ev.EmbeddingCache(ev.Model("rand", lambda path: pytest.fail("cache miss"), key), tmp_path / "cache", "gtzan")
    wav = root / "genres" / "jazz" / "jazz.00006.wav"
    np.testing.assert_allclose(cache(wav), embedder.embed_file(str(wav))[0], atol=1e-5)
    mel = layout.mel_path(ev.read_playlist_task(prepared, layout.root)["test_ids"][0])
    cache = ev.EmbeddingCache(ev.Model("rand", lambda path: pytest.fail("cache miss"), key), tmp_path / "cache", "melon")
    np.testing.assert_allclose(cache(mel), embedder.embed_file(mel)[0], atol=1e-5)
    capsys.readouterr()
    ev.main(argv)  # everything from the cache now
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["gtzan"]["rand"]["embedded"] == 0 and again["playlists"]["rand"]["embedded"] == 0
    assert again["gtzan"]["rand"]["runs"] == g["runs"] and again["playlists"]["rand"]["ndcg"] == p["ndcg"]


def test_playlists_on_the_shared_synthetic_melon(synth_melon, prepared_data, tmp_path):
    """The protocol reads what `synth` and `prepare` really write; genre-carrying embeddings beat random,
    and with only Melon given the report maps the test songs coloured by their major genre."""
    models = [_model(SignalEmbedder(), "signal"), _model(NoiseEmbedder(), "noise")]
    report = ev.evaluate_models(models, playlists=(prepared_data, synth_melon), out_dir=tmp_path,
                                params=dataclasses.replace(FAST, runs=1))
    good, noise = report["playlists"]["signal"], report["playlists"]["noise"]
    splits = json.loads((prepared_data / "splits.json").read_text())
    assert good["n_test_songs"] == len(splits["test"]) and good["n_playlists"] > 0
    # measured: nDCG@10 signal 0.47, noise 0.20, random 0.23
    assert good["ndcg"] > 1.5 * good["random"]["ndcg"] and good["ndcg"] > 1.5 * noise["ndcg"]
    assert (tmp_path / "embedding_map.png").is_file() and "Table 3" in (tmp_path / "report.md").read_text()
