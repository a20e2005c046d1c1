"""A music library as a prepare source (cmir_tf.data.library, library_tags, library_playlists): tags,
playlists, ids, the records' mels against embed's path, and what a library without genres can train."""
import json
import os

import numpy as np
import pytest
from library_data import make_library, tag, write_audio

from cmir_tf.data.library_tags import GENRE_SEPARATORS, clean, read_sidecar, read_tags, split_values
from cmir_tf.errors import ConfigError, DataError


def _records(data):
    import tensorflow as tf

    from cmir_tf.data.tfrecords import parse_example_numpy

    out = {}
    for split in ("train", "val", "test"):
        for shard in sorted((data / split).glob("*.tfrecord")):
            for raw in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
                rec = parse_example_numpy(raw)
                out[rec["song_id"]] = rec
    return out


def _ids(data) -> dict:
    return {e["path"]: e["id"] for e in json.loads((data / "library_ids.json").read_text())["songs"]}


@pytest.fixture(scope="module")
def prepared_library(tmp_path_factory):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    root = tmp_path_factory.mktemp("library")
    files = make_library(root / "lib")
    manifest = prepare(LibrarySource(root / "lib"), root / "data", progress=False, verbose=False)
    return root, files, manifest


# --------------------------------------------------------------------------------------------- tags
def test_genre_values_split_on_the_documented_separators_only():
    assert GENRE_SEPARATORS == (";", "/", ",")
    assert split_values(["Drum & Bass; R&B/Soul, Pop", "pop"], GENRE_SEPARATORS) == ["Drum & Bass", "R&B", "Soul",
                                                                                      "Pop", "pop"]
    assert split_values(["Earth, Wind & Fire", "AC/DC"], (";",)) == ["Earth, Wind & Fire", "AC/DC"]
    junk = ("<Unknown>", "(None)", "  ", "unknown artist")
    assert [clean(v) for v in (*junk, "  Hip   Hop ")] == [None] * 4 + ["Hip Hop"]


def test_repeated_vorbis_genres_and_damaged_tags(tmp_path):
    path = write_audio(tmp_path / "a.ogg", 300)
    tag(path, genre=["Rock", "Drum & Bass;Jazz"], artist=["Ann; Bob"], album="  ", title="T")
    assert read_tags(path) == ({"genres": ["Rock", "Drum & Bass", "Jazz"], "artists": ["Ann", "Bob"], "album": None,
                                "title": "T"}, None)
    tag(path, genre=["Rock", "x" * 2_000_000])  # a huge frame: the value is cut, the file still read
    assert [len(g) for g in read_tags(path)[0]["genres"]] == [4, 200]
    bad = tmp_path / "b.mp3"  # an ID3v2 header announcing a tag far longer than the file
    bad.write_bytes(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + b"\x00" * 100)
    tags, problem = read_tags(bad)
    assert tags["genres"] == [] and problem.startswith("bad_tags")


def test_sidecar_overrides_tags_and_needs_a_path_column(tmp_path):
    (tmp_path / "t.tsv").write_text("path\tgenres\tartists\talbum\nA/x.ogg\tFolk/Pop\tCat\t\n", encoding="utf-8")
    assert read_sidecar(tmp_path / "t.tsv", tmp_path) == {"A/x.ogg": {"genres": ["Folk", "Pop"], "artists": ["Cat"]}}
    (tmp_path / "t.csv").write_text("file,genres\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="t.csv: the tags sidecar needs a 'path' column"):
        read_sidecar(tmp_path / "t.csv", tmp_path)


# ----------------------------------------------------------------------------------------- playlists
def test_m3u_entries_resolved_and_skipped_by_reason(tmp_path):
    from cmir_tf.data.library_playlists import read_playlist

    root = tmp_path / "lib"
    (root / "lists").mkdir(parents=True)
    known = {"A/1.ogg", "A/2.ogg", "B/3.mp3"}
    m3u = root / "lists" / "mix.m3u8"
    m3u.write_text("#EXTM3U\n#EXTINF:1,x\n../A/1.ogg\n" + str(root / "B" / "3.mp3") + "\n../A/1.ogg\n"
                   "http://radio.example/stream\n../../outside.ogg\n/etc/passwd.mp3\n../A/none.ogg\n"
                   "..\\A\\2.ogg\n", encoding="utf-8")
    songs, skipped = read_playlist(str(m3u), str(root), known)
    assert songs == ["A/1.ogg", "B/3.mp3", "A/2.ogg"]
    assert dict(skipped) == {"url": 1, "outside": 2, "missing": 1}


# ----------------------------------------------------------------------------------------- prepare
def test_prepared_library_keeps_the_melon_contract(prepared_library):
    from cmir_tf.data.prepared import PreparedData

    root, files, manifest = prepared_library
    data = root / "data"
    ids = _ids(data)
    assert sorted(ids) == sorted(files) and sorted(ids.values()) == list(range(len(files)))
    lib = manifest["library"]
    assert lib["playlists_from"] == "albums" and lib["songs"] == 6 and lib["albums"] == 2 and lib["artists"] == 2
    # the wav carries no tag: its folders give artist/album, and with no genre it is skipped like Melon's
    assert manifest["skipped"] == [{"song_id": ids["Ann/First/02.wav"], "reason": "no_genres"}]
    vocab = PreparedData(data).read_vocab()
    assert [(v["code"], v["name"]) for v in vocab] == [("jazz", "Jazz"), ("pop", "Pop"), ("rock", "Rock")]
    recs = _records(data)
    names = {v["index"]: v["code"] for v in vocab}
    expected = {"Ann/First/00.ogg": {"rock"}, "Ann/First/01.flac": {"rock", "pop"}, "Bob/Second/00.mp3": {"jazz"},
                "Bob/Second/01.ogg": {"jazz"}, "Bob/Second/02.flac": {"jazz", "pop"}}
    assert {p: {names[g] for g in recs[ids[p]]["genres"]} for p in expected} == expected
    path_of = {i: p for p, i in ids.items()}
    groups = {}
    for g, s in PreparedData(data).read_relation("train", "artist"):  # one group per artist: Ann, Bob
        groups.setdefault(int(g), set()).add(path_of[int(s)].split("/")[0])
    train_artists = {path_of[s].split("/")[0] for s in PreparedData(data).read_splits()["train"]}
    assert sorted(map(sorted, groups.values())) == [[a] for a in sorted(train_artists)]
    assert sum(manifest["counts"].values()) == 5


def test_records_hold_the_mel_embed_computes(prepared_library):
    from cmir_tf.audio import decoding as audio
    from cmir_tf.audio import frontend

    root, files, _ = prepared_library
    ids, recs = _ids(root / "data"), _records(root / "data")
    for rel in ("Bob/Second/00.mp3", "Ann/First/01.flac"):
        mel = frontend.melspectrogram(audio.load_audio(root / "lib" / rel)).numpy()
        np.testing.assert_array_equal(recs[ids[rel]]["mel"], mel.astype(np.float16))


def test_rerun_on_a_grown_library_keeps_the_ids(tmp_path):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    make_library(tmp_path / "lib")
    prepare(LibrarySource(tmp_path / "lib"), tmp_path / "data", metadata_only=True, progress=False, verbose=False)
    before = _ids(tmp_path / "data")
    tag(write_audio(tmp_path / "lib" / "Aaa" / "Zero" / "x.ogg", 500), genre="Rock")
    with pytest.raises(ConfigError, match="already prepared with other inputs \\(audio files, playlists or the tags "
                                          "sidecar of the library"):
        prepare(LibrarySource(tmp_path / "lib"), tmp_path / "data", metadata_only=True, progress=False, verbose=False)
    prepare(LibrarySource(tmp_path / "lib"), tmp_path / "data", metadata_only=True, overwrite=True, progress=False,
            verbose=False)
    after = _ids(tmp_path / "data")
    assert {p: after[p] for p in before} == before and after["Aaa/Zero/x.ogg"] == len(before)


def test_m3u_playlists_and_rare_genres(tmp_path):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    make_library(tmp_path / "lib")
    (tmp_path / "lib" / "mine.m3u").write_text("Ann/First/00.ogg\nBob/Second/01.ogg\nhttp://x/y.mp3\n")
    m = prepare(LibrarySource(tmp_path / "lib", min_genre_count=2), tmp_path / "data", metadata_only=True,
                progress=False, verbose=False)
    lib = m["library"]
    assert lib["playlists_from"] == "m3u" and lib["playlist_files"]["entries_skipped"] == {"url": 1}
    saved = json.loads((tmp_path / "data" / "library_playlists.json").read_text())
    assert saved["from"] == "m3u" and saved["names"] == ["mine.m3u"]
    assert lib["genres"]["dropped"] == {} and lib["genres"]["kept"] == 3  # rock 2, pop 2, jazz 3
    ids = _ids(tmp_path / "data")
    assert {s["song_id"]: s["reason"] for s in m["skipped"]} == {
        ids[p]: "no_playlist" for p in ids if p not in ("Ann/First/00.ogg", "Bob/Second/01.ogg")}
    m = prepare(LibrarySource(tmp_path / "lib", min_genre_count=3), tmp_path / "data", metadata_only=True,
                overwrite=True, progress=False, verbose=False)
    assert m["library"]["genres"]["dropped"] == {"Pop": 2, "Rock": 2}


def test_a_library_without_genres_trains_only_the_modes_without_them(tmp_path):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.data.prepared import PreparedFacts
    from cmir_tf.prepare import prepare
    from cmir_tf.train.config import TrainConfig, model_config

    make_library(tmp_path / "lib")
    m = prepare(LibrarySource(tmp_path / "lib", ignore_genres=True), tmp_path / "data", metadata_only=True,
                progress=False, verbose=False)
    assert m["n_genres"] == 0 and sum(m["counts"].values()) == 6  # every song kept
    facts = PreparedFacts(tmp_path / "data")
    for mode in ("ss", "aim_artist", "aim_playlist", "contr_cf", "bline_cf"):
        assert model_config(TrainConfig(mode=mode), facts)["vocab_size"] == 0
    for mode in ("contr_cf_g", "bline_g", "aim_genre"):
        with pytest.raises(ConfigError, match=f"mode '{mode}' .*needs genres, but this prepared folder has none.*"
                                              "modes without genre terms train: aim_artist, aim_playlist, "
                                              "bline_cf, contr_cf, ss$"):
            model_config(TrainConfig(mode=mode), facts)


def test_cli_errors_name_the_input(tmp_path, capsys):
    from cmir_tf.prepare import main

    assert main(["--library", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'nope'}: library folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--library", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no usable audio file" in capsys.readouterr().err
    assert main(["--melon", str(tmp_path), "--tags", "x.csv", "--out", str(tmp_path / "o")]) == 2
    assert "apply to --library only" in capsys.readouterr().err


def test_rerun_resumes_without_rewriting_a_shard(prepared_library):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    root, _, first = prepared_library
    shards = {p: p.stat().st_mtime_ns for p in (root / "data").glob("*/*.tfrecord")}
    again = prepare(LibrarySource(root / "lib"), root / "data", progress=False, verbose=False)
    assert {p: p.stat().st_mtime_ns for p in (root / "data").glob("*/*.tfrecord")} == shards
    assert again["counts"] == first["counts"] and again["library"] == first["library"]


def test_a_library_without_playlists_or_albums_trains_only_the_modes_without_them(tmp_path):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.data.prepared import PreparedData, PreparedFacts
    from cmir_tf.prepare import prepare
    from cmir_tf.train.config import TrainConfig, model_config

    for i in range(4):  # loose files, no folder, no tag: no album, no artist, no playlist, no genre
        write_audio(tmp_path / "lib" / f"{i}.wav", 200 + 50 * i, seed=i)
    m = prepare(LibrarySource(tmp_path / "lib"), tmp_path / "data", progress=False, verbose=False)
    assert m["library"]["playlists_from"] == "none" and sum(m["counts"].values()) == 4 and m["skipped"] == []
    data = PreparedData(tmp_path / "data")
    assert len(data.read_cf()[0]) == 0 and len(data.read_relation("train", "playlist")) == 0
    assert data.read_library_playlists() == ("none", [], [])
    facts = PreparedFacts.for_training(tmp_path / "data")
    for mode in ("ss", "aim_artist"):
        assert model_config(TrainConfig(mode=mode), facts)["cf_dim"] == m["cf_dim"]
    for mode in ("contr_cf", "bline_cf", "aim_playlist", "hybrid"):
        with pytest.raises(ConfigError, match=f"mode '{mode}' .*needs (genres|playlists).*modes without genre "
                                              "or playlist terms train: aim_artist, ss$"):
            model_config(TrainConfig(mode=mode), facts)


# ---------------------------------------------------------------------------------- evaluate playlists
_ALBUMS = {(artist, album): [("ogg", "Rock")] * 5 for artist, album in (("Ann", "A"), ("Bob", "B"), ("Cat", "C"),
                                                                         ("Dan", "D"))}


def _album_embedder(root, seen):
    """A fake model: each track's patches are the one-hot of its album folder (perfect album retrieval)."""
    albums = sorted({os.path.dirname(p) for p in _ids_of(root)})

    def embed(path):
        seen.append(path)
        rel = os.path.relpath(path, root / "lib")
        v = np.zeros((2, len(albums)), np.float32)
        v[:, albums.index(os.path.dirname(rel))] = 1
        return v
    return embed


def _ids_of(root):
    return _ids(root / "data")


@pytest.fixture(scope="module")
def library_four_albums(tmp_path_factory):
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    root = tmp_path_factory.mktemp("albums")
    make_library(root / "lib", _ALBUMS)
    prepare(LibrarySource(root / "lib"), root / "data", metadata_only=True, progress=False, verbose=False)
    return root


def test_evaluate_playlists_on_a_library_uses_its_albums_and_files(library_four_albums, tmp_path, monkeypatch,
                                                                   capsys):
    from cmir_tf import evaluate as ev
    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.evaluate import __main__ as evaluate_cli
    from cmir_tf.evaluate.cache import Model

    root = library_four_albums
    ids, splits = _ids_of(root), PreparedData(root / "data").read_splits()
    split_of = {s: name for name, songs in splits.items() for s in songs}
    by_album = {}
    for path, sid in ids.items():
        by_album.setdefault(os.path.dirname(path), []).append(split_of[sid])
    expected = sum(1 for sp in by_album.values() if "test" in sp and {"train", "val"} & set(sp))
    assert expected >= 2 and len(splits["test"]) >= 2
    seen = []
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, _album_embedder(root, seen), key="albums"))
    assert ev.main(["playlists", "--model", "m", "--data", str(root / "data"), "--quiet", "--no-cache",
                    "--k", "1", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "playlists.json").read_text())["result"]
    assert (result["ndcg"], result["map"], result["n_playlists"]) == (1.0, 1.0, expected)
    assert result["n_test_songs"] == len(splits["test"]) and result["random"]["ndcg"] < 1.0
    # the test songs and the queries (the other songs of their albums) embedded from their own audio files
    with_test = {os.path.dirname(p) for p, sid in ids.items() if split_of[sid] == "test"}
    assert sorted(seen) == sorted(str(root / "lib" / p) for p in ids if os.path.dirname(p) in with_test)
    assert f"over {expected} playlists" in capsys.readouterr().out
    # each album (no album tag: its folders name it "album — artist") and song named by its file
    test_of = {}
    for p, sid in ids.items():
        if split_of[sid] == "test":
            test_of.setdefault(f"{os.path.basename(os.path.dirname(p))} — {p.split('/')[0]}", []).append(p)
    per = result["per_playlist"]
    assert {r["playlist"]: sorted(r["test_songs"]) for r in per} == {n: sorted(t) for n, t in test_of.items()
                                                                     if n in {r["playlist"] for r in per}}
    assert len(per) == expected and all(r["predicted"][0] in r["test_songs"] and r["ndcg"] == 1.0 for r in per)


def test_evaluate_playlists_says_what_a_melon_folder_needs(tmp_path, monkeypatch, capsys):
    from cmir_tf import evaluate as ev
    from cmir_tf.evaluate import __main__ as evaluate_cli
    from cmir_tf.evaluate.cache import Model

    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, lambda path: pytest.fail("embedded"), key="x"))

    (tmp_path / "melon_prepared").mkdir()
    (tmp_path / "melon_prepared" / "splits.json").write_text('{"train": [1], "val": [], "test": [2]}')
    assert ev.main(["playlists", "--model", str(tmp_path), "--data", str(tmp_path / "melon_prepared"),
                    "--no-cache", "--quiet"]) == 2
    assert "not prepared from a music library (no library_ids.json): give --melon" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- kill and resume
def _shards(data):
    return {p.relative_to(data).as_posix(): p for p in sorted(data.glob("*/*.tfrecord"))}


def test_a_killed_prepare_resumes_without_rewriting_a_finished_shard(tmp_path):
    """SIGKILL after the first shard is done; the rerun keeps every finished shard (same inode and mtime)
    and ends with what an uninterrupted run writes."""
    import signal
    import subprocess
    import sys
    import time

    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    for a, album in enumerate(("A/One", "B/Two")):  # 40 s tracks: each shard takes a while to compute
        for i in range(3):
            tag(write_audio(tmp_path / "lib" / album / f"{i}.ogg", 200 + 100 * a + 30 * i, seed=3 * a + i,
                            seconds=40), genre="Rock")
    data, done_dir = tmp_path / "data", tmp_path / "data" / ".prepare" / "done"
    proc = subprocess.Popen([sys.executable, "-m", "cmir_tf.prepare", "--library", str(tmp_path / "lib"), "--out",
                             str(data), "--shard-size", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (done_dir.is_dir() and any(done_dir.glob("*.json"))) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, err
    finished = {p.stem for p in done_dir.glob("*.json")}
    assert 1 <= len(finished) < 6 and not (data / "manifest.json").exists()
    before = {n: (p.stat().st_ino, p.stat().st_mtime_ns) for n, p in _shards(data).items() if p.name in finished}
    assert len(before) == len(finished)
    resumed = prepare(LibrarySource(tmp_path / "lib"), data, shard_size=1, progress=False, verbose=False)
    after = _shards(data)
    assert {n: (after[n].stat().st_ino, after[n].stat().st_mtime_ns) for n in before} == before
    whole = prepare(LibrarySource(tmp_path / "lib"), tmp_path / "whole", shard_size=1, progress=False, verbose=False)
    expected = _shards(tmp_path / "whole")
    assert sorted(after) == sorted(expected) and len(after) == 6
    assert all(after[n].read_bytes() == expected[n].read_bytes() for n in after)
    for name in ("splits.json", "library_ids.json", "library_playlists.json", "pairs/train/playlist.npy"):
        assert (data / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    for key in ("counts", "skipped", "shards", "library"):
        assert resumed[key] == whole[key], key


def test_explore_matches_library_tracks_by_their_files(library_four_albums):
    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.explore.page import UNKNOWN, track_info

    root = library_four_albums
    ids = _ids_of(root)
    split_of = {s: n for n, songs in PreparedData(root / "data").read_splits().items() for s in songs}
    # embedded from the library, from its Ann/ folder, from a folder above it; a bare "00" is in every album
    tracks = ["Ann/A/00", "A/01", "home/me/Music/Bob/B/02", "00", "Zed/Z/00", "12/12345"]
    info = track_info(tracks, prepared=root / "data")
    files = ["Ann/A/00.ogg", "Ann/A/01.ogg", "Bob/B/02.ogg"]
    assert info["split"] == [split_of[ids[f]] for f in files] + [UNKNOWN] * 3
    assert info["playlist"] == ["A — Ann", "A — Ann", "B — Bob"] + [UNKNOWN] * 3


def test_evaluate_all_on_a_library_maps_its_test_songs_by_folder(library_four_albums, tmp_path, monkeypatch):
    from cmir_tf import evaluate as ev
    from cmir_tf.evaluate import __main__ as evaluate_cli
    from cmir_tf.evaluate.cache import Model

    root, seen = library_four_albums, []
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, _album_embedder(root, seen), key=name))
    assert ev.main(["all", "--models", "albums=x", "--data", str(root / "data"), "--k", "1", "--quiet", "--no-cache",
                    "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["playlists"]["albums"]["ndcg"] == 1.0
    assert (tmp_path / "r" / "embedding_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="--melon needs --data"):
        evaluate_cli.run(evaluate_cli.build_arg_parser().parse_args(["all", "--models", "a=x", "--melon", "m", "--no-cache"]))
