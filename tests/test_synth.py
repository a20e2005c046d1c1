"""synth.py: Melon's exact layout and field names, determinism, and the planted genre / taste / artist
structure."""
import filecmp
import json
import os
import re

import numpy as np
import pytest

from cmir_tf.data.melon import MelonLayout, load_mel
from cmir_tf.synth import main, make_synthetic_melon
from cmir_tf.synth.generator import TASTES

SONG_FIELDS = {"id", "album_id", "artist_id_basket", "artist_name_basket", "song_name", "song_gn_gnr_basket",
               "song_gn_dtl_gnr_basket", "issue_date"}
PLAYLIST_FIELDS = {"id", "plylst_title", "tags", "songs", "like_cnt", "updt_date"}


def _load(root, name):
    with open(os.path.join(root, name), encoding="utf-8") as f:
        return json.load(f)


def test_layout_and_field_names_are_melons(synth_melon):
    root = str(synth_melon)
    genres = _load(root, "genre_gn_all.json")
    assert all(re.fullmatch(r"GN\d{4}", c) for c in genres)
    majors = {c for c in genres if c.endswith("00")}
    assert len(majors) == 8 and len(genres) > 3 * len(majors)
    meta = _load(root, "song_meta.json")
    assert [e["id"] for e in meta] == list(range(300))
    for e in meta:
        assert SONG_FIELDS <= set(e)
        assert e["song_gn_gnr_basket"] and set(e["song_gn_gnr_basket"]) <= majors
        assert 1 <= len(e["song_gn_dtl_gnr_basket"]) <= 4
        # detailed codes are detailed (not GNxx00) and belong to one of the song's majors
        prefixes = {c[:4] for c in e["song_gn_gnr_basket"]}
        assert all(c in genres and not c.endswith("00") and c[:4] in prefixes for c in e["song_gn_dtl_gnr_basket"])
        assert re.fullmatch(r"\d{8}", e["issue_date"])
    n_pl = 0
    for split in ("train", "val", "test"):
        for p in _load(root, f"{split}.json"):
            assert set(p) == PLAYLIST_FIELDS and p["songs"] and all(0 <= s < 300 for s in p["songs"])
            assert len(set(p["songs"])) == len(p["songs"])
            n_pl += 1
    assert n_pl == 150
    lay = MelonLayout(root)
    raw = np.load(lay.mel_path(299), allow_pickle=False)
    assert raw.shape == (48, 1876) and raw.dtype == np.float32 and np.isfinite(raw).all()
    assert os.path.isfile(os.path.join(root, "arena_mel", "0", "299.npy"))
    assert -200 <= raw.min() and raw.max() <= 30 and 3 < raw.std() < 30 and -100 < raw.mean() < 0  # dB-like


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_synthetic_melon(tmp_path / name, songs=12, playlists=6, seed=seed)
    files = ["song_meta.json", "genre_gn_all.json", "train.json", "val.json", "test.json",
             "arena_mel/0/0.npy", "arena_mel/0/11.npy"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert match == files and not errors
    assert not filecmp.cmp(tmp_path / "a" / "song_meta.json", tmp_path / "c" / "song_meta.json", shallow=False)
    assert not filecmp.cmp(tmp_path / "a" / "arena_mel/0/0.npy", tmp_path / "c" / "arena_mel/0/0.npy",
                           shallow=False)


def test_genre_is_learnable_from_any_crop_but_not_from_one_band(synth_melon):
    """Nearest-centroid on the band means of ONE random 256-frame crop per song, half the songs held out."""
    meta = _load(synth_melon, "song_meta.json")
    y = np.array([int(e["song_gn_gnr_basket"][0][2:4]) - 1 for e in meta])
    lay = MelonLayout(synth_melon)
    rng = np.random.default_rng(0)
    x = []
    for e in meta:
        m = load_mel(lay.mel_path(e["id"]))
        t0 = rng.integers(0, m.shape[0] - 256)
        x.append(m[t0:t0 + 256].mean(0))
    x = np.array(x)
    tr, te = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    ks = np.unique(y[tr])
    cent = np.stack([x[tr][y[tr] == k].mean(0) for k in ks])
    acc = (ks[np.argmin(((x[te][:, None] - cent[None]) ** 2).sum(-1), 1)] == y[te]).mean()
    majority = np.bincount(y[te]).max() / len(te)
    assert acc > majority + 0.25, (acc, majority)
    best_band = max((ks[np.argmin(np.abs(x[te][:, b, None] - cent[None, :, b]), 1)] == y[te]).mean()
                    for b in range(48))
    assert best_band < acc - 0.1  # no single band gives it away


def test_playlists_follow_a_hidden_taste_that_genre_does_not_explain(tmp_path):
    s = make_synthetic_melon(tmp_path, songs=400, playlists=200, seed=1, mels=False)
    taste, major = s["taste"], s["major"]
    same_taste_same_major = n = 0
    for split in ("train", "val", "test"):
        for p in _load(tmp_path, f"{split}.json"):
            songs = np.array(p["songs"])
            for i in range(len(songs)):
                same = major[songs[i + 1:]] == major[songs[i]]
                same_taste_same_major += (taste[songs[i + 1:]][same] == taste[songs[i]]).sum()
                n += same.sum()
    # among co-occurring pairs of the SAME major genre, taste agrees far more often than chance (1/6)
    assert same_taste_same_major / n > 2 / TASTES
    assert not os.path.exists(tmp_path / "arena_mel")  # mels=False writes metadata only


def test_taste_faintly_tilts_the_spectrum(synth_melon):
    meta = _load(synth_melon, "song_meta.json")
    s = make_synthetic_melon(synth_melon.parent / "taste_probe", songs=300, playlists=150, seed=0, mels=False)
    lay = MelonLayout(synth_melon)
    tilt = np.array([(lambda m: m[:, 36:].mean() - m[:, :12].mean())(load_mel(lay.mel_path(e["id"])))
                     for e in meta])
    major = s["major"]
    resid = tilt - np.array([tilt[major == k].mean() for k in major])  # remove the genre's own tilt
    assert np.corrcoef(s["taste"], resid)[0, 1] > 0.3


def test_artists_share_genre_and_taste_and_a_sound(synth_melon):
    """Each artist works in one (major genre, taste) cell, and its songs share an audio signature: among
    the artists of a song's genre, the nearest artist (centroid of the others' songs, per-band spread of
    one 256-frame crop) is its own far more often than chance."""
    meta = _load(synth_melon, "song_meta.json")
    artist = np.array([e["artist_id_basket"][0] for e in meta])
    s = make_synthetic_melon(synth_melon.parent / "artist_probe", songs=300, playlists=150, seed=0, mels=False)
    np.testing.assert_array_equal(s["artist"], artist)
    major, taste = s["major"], s["taste"]
    assert all(len(set(zip(major[artist == a], taste[artist == a]))) == 1 for a in np.unique(artist))
    assert 300 // 8 <= len(np.unique(artist)) <= 300 // 4
    lay = MelonLayout(synth_melon)
    x = np.array([load_mel(lay.mel_path(e["id"]))[800:1056].std(0) for e in meta])
    x = (x - x.mean(0)) / x.std(0)
    hits = chance = n = 0
    for i in range(len(meta)):
        others = np.arange(len(meta)) != i
        rivals = [a for a in np.unique(artist[major == major[i]]) if (others & (artist == a)).any()]
        if artist[i] not in rivals or len(rivals) < 2:
            continue
        centroid = {a: x[others & (artist == a)].mean(0) for a in rivals}
        hits += min(rivals, key=lambda a: ((x[i] - centroid[a]) ** 2).sum()) == artist[i]
        chance += 1 / len(rivals)
        n += 1
    assert n > 200 and hits / n > chance / n + 0.5, (hits / n, chance / n)


def test_cli_writes_and_documents_every_flag(tmp_path, capsys):
    main(["--out", str(tmp_path / "m"), "--songs", "5", "--playlists", "3", "--seed", "2", "--no-mels"])
    assert len(_load(tmp_path / "m", "song_meta.json")) == 5
    assert sum(len(_load(tmp_path / "m", f"{s}.json")) for s in ("train", "val", "test")) == 3
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--out", "--songs", "--playlists", "--seed", "--majors", "--mean-songs", "--no-mels", "--hostile"):
        assert flag in out
    # a bad value: one "error: …" line naming the flag, exit 2, nothing written
    assert main(["--out", str(tmp_path / "bad"), "--majors", "0", "--no-mels"]) == 2
    assert capsys.readouterr().err.strip() == "error: --majors must be in 1..99, got 0"
    assert not (tmp_path / "bad").exists()
