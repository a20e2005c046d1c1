"""A synthetic Melon Playlist Dataset with planted structure, in exactly Melon's layout.

``python -m cmir_tf.synth --out DIR [--songs N] [--playlists P] [--seed S] [--majors M] [--no-mels]``

What is planted (so that a model trained on it has something real to find):

* **Genres.** Each song has one major genre ``GNxx00`` (5 % have a second one) and 1–3 detailed genres
  ``GNxxyy`` of it. A major genre fixes a spectral envelope (two Gaussian bumps over the 48 bands), a
  rhythmic amplitude modulation (rate, depth and the bands it moves) and each detailed genre adds a
  smaller bump and shifts the rate a little. Per-song gain, envelope jitter, phase, tempo jitter and
  3 dB Gaussian noise make genre learnable from any 256-frame crop but not by reading one value.
* **Taste.** A hidden per-song factor (``TASTES`` values, independent of genre) that playlists follow:
  a playlist picks one taste and one or two major genres and draws ~70 % of its songs from that
  (genre, taste) cell, ~15 % from its genres at any taste and ~15 % from anywhere (popularity-weighted).
  So playlist co-occurrence carries information genre does not. Taste also faintly tilts the spectrum
  (±2 dB across the bands), so audio can in principle learn it from playlists.
* **Artists** (:mod:`cmir_tf.synth.artists`). Each artist works in one (major genre, taste) cell, about
  8 songs an artist, and all its songs share an audio signature; the genre and taste draws above are
  what they were without artists. An artist probe has something to find.
* Song ids are ``0 … N−1``; the playlists are split 80/10/10 over ``train.json``/``val.json``/
  ``test.json``; some songs appear in no playlist (as in Melon).

Everything is drawn from ``numpy.random.default_rng`` seeded by ``seed`` (mels by ``(seed, song_id)``),
so a seed gives the same bytes. :func:`plant_hostile` adds every fault the real dataset has, for tests.
"""
from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np

from cmir_tf.constants import DB_FLOOR, MELON_FRAMES, N_BANDS
from cmir_tf.data.melon import PLAYLIST_FILES, MelonLayout, read_playlists, write_mel
from cmir_tf.errors import ConfigError
from cmir_tf.fileio import save_npy, write_json
from cmir_tf.synth.artists import artist_sound, assign_artists

TASTES = 6
_MAJOR_NAMES = [
    "Ballad", "Dance", "Rap/Hip-hop", "R&B/Soul", "Indie", "Rock/Metal", "Trot", "Folk/Blues", "Pop",
    "Electronica", "OST", "Jazz", "Classical", "J-pop", "Children", "New age", "Religious", "Gugak",
    "World", "Latin", "Country", "Reggae", "Funk", "Disco", "Ambient", "Lo-fi", "Soundtrack", "Musical",
    "Chanson", "Fusion",
]


# ------------------------------------------------------------------------------------------- genres
def _genre_tree(majors: int, seed: int):
    """``(codes {code: name}, detailed_of [list of codes per major], params per code)``."""
    if not 1 <= majors <= 99:
        raise ConfigError(f"majors must be in 1..99, got {majors}")
    rng = np.random.default_rng([seed, 1])
    names = {}
    detailed_of = []
    for k in range(1, majors + 1):
        mname = _MAJOR_NAMES[k - 1] if k <= len(_MAJOR_NAMES) else f"Genre {k}"
        names[f"GN{k:02d}00"] = mname
        n_det = int(rng.integers(3, 12))  # Melon: 30 majors, 224 detailed → ~7.5 each
        codes = [f"GN{k:02d}{j:02d}" for j in range(1, n_det + 1)]
        for j, c in enumerate(codes, 1):
            names[c] = f"{mname} / style {j}"
        detailed_of.append(codes)
    return names, detailed_of


def _audio_params(majors: int, detailed_of, seed: int):
    """Per-genre audio parameters (fixed by the seed)."""
    rng = np.random.default_rng([seed, 2])
    b = np.arange(N_BANDS, dtype=np.float64)
    env = np.zeros((majors, N_BANDS))
    mod_bands = np.zeros((majors, N_BANDS))
    rate = rng.uniform(0.02, 0.12, majors)  # cycles per frame (period 8–50 frames)
    depth = rng.uniform(3.0, 8.0, majors)
    for k in range(majors):
        for _ in range(2):
            c, w, h = rng.uniform(2, 46), rng.uniform(3, 9), rng.uniform(6, 14)
            env[k] += h * np.exp(-0.5 * ((b - c) / w) ** 2)
        env[k] += rng.uniform(-8, 8) * (b / (N_BANDS - 1) - 0.5)
        c, w = rng.uniform(0, 48), rng.uniform(6, 16)
        mod_bands[k] = np.exp(-0.5 * ((b - c) / w) ** 2)
    det_env, det_rate = {}, {}
    for codes in detailed_of:
        for c in codes:
            cc, w, h = rng.uniform(0, 48), rng.uniform(2, 6), rng.uniform(3, 6)
            det_env[c] = h * np.exp(-0.5 * ((b - cc) / w) ** 2)
            det_rate[c] = rng.uniform(-0.1, 0.1)
    tilt = np.linspace(-2.0, 2.0, TASTES)
    return {"env": env, "mod_bands": mod_bands, "rate": rate, "depth": depth, "det_env": det_env,
            "det_rate": det_rate, "tilt": tilt}


def synth_mel(song_id: int, major: int, detailed, taste: int, params, seed: int,
              n_frames: int = MELON_FRAMES, artist: int | None = None) -> np.ndarray:
    """The planted ``(48, n_frames)`` float32 dB mel of one song (bands × frames, as Melon stores it);
    ``artist`` adds that artist's sound (:func:`cmir_tf.synth.artists.artist_sound`)."""
    rng = np.random.default_rng([seed, 3, int(song_id)])
    b = np.arange(N_BANDS)[:, None]
    t = np.arange(n_frames)[None, :]
    bump, factor, motif = artist_sound(artist, song_id, seed, n_frames)
    env = params["env"][major] + sum(params["det_env"][c] for c in detailed) + bump
    env = env + rng.normal(0, 1.0, 3) @ np.cos(np.outer(np.arange(1, 4), np.linspace(0, np.pi, N_BANDS)))
    rate = params["rate"][major] * (1 + sum(params["det_rate"][c] for c in detailed)) * rng.uniform(0.95, 1.05)
    rate *= factor
    mod = params["depth"][major] * params["mod_bands"][major][:, None] * np.sin(
        2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    tilt = params["tilt"][taste] * (b / (N_BANDS - 1) - 0.5) * 2
    slow = 2.0 * np.sin(2 * np.pi * t / rng.uniform(300, 900) + rng.uniform(0, 2 * np.pi))
    level = rng.normal(0, 4)
    noise = rng.normal(0, 3.0, (N_BANDS, n_frames))  # drawn after the level, as always
    mel = -45.0 + level + env[:, None] + mod + tilt + slow + noise + motif
    return np.clip(mel, DB_FLOOR, 30.0).astype(np.float32)


# -------------------------------------------------------------------------------------------- songs
def _songs(n, majors, detailed_of, rng, artist_rng):
    pop_major = 1.0 / np.arange(1, majors + 1) ** 0.8
    pop_major = rng.permutation(pop_major / pop_major.sum())
    major = rng.choice(majors, n, p=pop_major)
    taste = rng.integers(0, TASTES, n)
    n_det = rng.choice([1, 2, 3], n, p=[0.5, 0.35, 0.15])
    second = np.where(rng.random(n) < 0.05, rng.integers(0, majors, n), -1)
    # weighted sampling without replacement of the detailed codes (exponential race, vectorised)
    max_det = max(len(c) for c in detailed_of)
    n_codes = np.array([len(c) for c in detailed_of])
    w = 1.0 / np.arange(1, max_det + 1) ** 0.7
    keys = -np.log(rng.random((n, max_det))) / w
    keys[np.arange(max_det)[None, :] >= n_codes[major][:, None]] = np.inf
    pick = np.argsort(keys, axis=1)[:, :3]
    songs = []
    n_artists = max(1, n // 8)
    rng.integers(0, n_artists, n)  # the draw artists once were: the albums and dates after it stay as they were
    artist = assign_artists(major * TASTES + taste, n_artists, artist_rng)
    album = rng.integers(0, max(1, n // 4), n)
    year = rng.integers(1990, 2021, n)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    for i in range(n):
        codes = detailed_of[major[i]]
        det = [codes[j] for j in pick[i, : min(n_det[i], len(codes))]]
        maj = [f"GN{major[i] + 1:02d}00"]
        if second[i] >= 0 and second[i] != major[i]:
            maj.append(f"GN{second[i] + 1:02d}00")
            det.append(detailed_of[second[i]][0])
        songs.append({
            "song_gn_dtl_gnr_basket": det,
            "issue_date": f"{year[i]:04d}{month[i]:02d}{day[i]:02d}",
            "album_name": f"Album {album[i]}",
            "album_id": int(album[i]),
            "artist_id_basket": [int(artist[i])],
            "song_name": f"Song {i}",
            "song_gn_gnr_basket": maj,
            "artist_name_basket": [f"Artist {artist[i]}"],
            "id": i,
        })
    return songs, major, taste, artist


def _playlists(n_pl, major, taste, majors, mean_songs, rng, names):
    n = len(major)
    pop = rng.lognormal(0, 1.0, n)
    cell = major * TASTES + taste
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(majors * TASTES + 1))
    gorder = np.argsort(major, kind="stable")
    gbounds = np.searchsorted(major[gorder], np.arange(majors + 1))
    cum_all = np.cumsum(pop)

    def draw(idx, k):
        if len(idx) == 0 or k <= 0:
            return np.zeros(0, np.int64)
        c = np.cumsum(pop[idx])
        return idx[np.minimum(np.searchsorted(c, rng.random(k) * c[-1]), len(idx) - 1)]

    lens = np.maximum(2, rng.poisson(mean_songs - 2, n_pl) + 2)
    tastes = rng.integers(0, TASTES, n_pl)
    two = rng.random(n_pl) < 0.3
    g1 = rng.integers(0, majors, n_pl)
    g2 = rng.integers(0, majors, n_pl)
    tag_pool = [f"taste{t}" for t in range(TASTES)]
    out = []
    for p in range(n_pl):
        gs = [g1[p], g2[p]] if two[p] and g2[p] != g1[p] else [g1[p]]
        L = lens[p]
        k_cell = int(round(0.7 * L)); k_gen = int(round(0.15 * L)); k_any = L - k_cell - k_gen
        cells = np.concatenate([order[bounds[g * TASTES + tastes[p]]:bounds[g * TASTES + tastes[p] + 1]] for g in gs])
        gen = np.concatenate([gorder[gbounds[g]:gbounds[g + 1]] for g in gs])
        anyk = np.minimum(np.searchsorted(cum_all, rng.random(k_any) * cum_all[-1]), n - 1)
        songs = np.concatenate([draw(cells, k_cell), draw(gen, k_gen), anyk])
        songs = list(dict.fromkeys(int(s) for s in songs))  # unique, order kept
        out.append({
            "tags": [names[f"GN{gs[0] + 1:02d}00"], tag_pool[tastes[p]]][: 1 + int(rng.random() < 0.5)],
            "id": p,
            "plylst_title": f"playlist {p}",
            "songs": songs,
            "like_cnt": int(rng.integers(0, 500)),
            "updt_date": f"20{int(rng.integers(10, 21)):02d}-0{int(rng.integers(1, 10))}-1{int(rng.integers(0, 9))}"
                         f" 12:00:00.000",
        })
    return out


def make_synthetic_melon(out, songs: int = 1000, playlists: int = 300, seed: int = 0, *, majors: int = 8,
                         mels: bool = True, mean_songs: float = 20.0, n_frames: int = MELON_FRAMES,
                         progress: bool = False) -> dict:
    """Write a synthetic Melon folder at ``out``; returns a summary dict (sizes; the ``major``, hidden
    ``taste`` and ``artist`` arrays, indexed by song id).

    ``mels=False`` writes only the JSON metadata (for scale tests: 650k songs / 150k playlists in about
    a minute). ``song_meta.json`` is written last, so its presence means the folder is complete (an
    interrupted run can be detected and redone). ``majors`` is the number of major genres (Melon has 30; 8 keeps small runs learnable).
    """
    if songs < 1 or playlists < 1:
        raise ConfigError(f"songs and playlists must be ≥ 1, got {songs} and {playlists}")
    layout = MelonLayout(out)
    os.makedirs(layout.root, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    names, detailed_of = _genre_tree(majors, seed)
    meta, major, taste, artist = _songs(songs, majors, detailed_of, rng, np.random.default_rng([seed, 4]))
    pls = _playlists(playlists, major, taste, majors, mean_songs, rng, names)
    write_json(layout.genres, names)
    a, b = int(0.8 * playlists), int(0.9 * playlists)
    for split, part in zip(("train", "val", "test"), (pls[:a], pls[a:b], pls[b:])):
        write_json(layout.playlists(split), part)
    if mels:
        params = _audio_params(majors, detailed_of, seed)
        it = range(songs)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="synth mels", unit="song", file=sys.stderr)
        for i in it:
            det = meta[i]["song_gn_dtl_gnr_basket"][: 3]
            det = [c for c in det if c.startswith(f"GN{major[i] + 1:02d}")]
            write_mel(layout, i, synth_mel(i, int(major[i]), det, int(taste[i]), params, seed, n_frames,
                                           artist=int(artist[i])))
    write_json(layout.song_meta, meta)  # last: its presence means the folder is complete
    return {"root": layout.root, "songs": songs, "playlists": playlists, "majors": majors,
            "genres": len(names), "entries": sum(len(p["songs"]) for p in pls), "mels": mels,
            "major": major, "taste": taste, "artist": artist}


# ------------------------------------------------------------------------------------------ hostile
class _Marker:
    """Harmless stand-in object for the pickled-file case (its pickle just names this class)."""


def plant_hostile(root, seed: int = 0) -> dict:
    """Plant every fault the real Melon has into the synthetic folder ``root`` (written with mels).

    Returns what a correct ``prepare`` must report: ``expected_skips`` ``{song_id: reason}`` (songs that
    appear in playlists), ``many_genres`` (ids given 12 genres, which must be KEPT), ``duplicates``
    ``{song_id: first entry's genres}``, ``unknown_entries`` (playlist entries naming absent songs),
    ``stray`` (paths of stray files).
    """
    layout = MelonLayout(root)
    with open(layout.song_meta, encoding="utf-8") as f:
        meta = json.load(f)
    in_pl = sorted({x for s in PLAYLIST_FILES for p in read_playlists(layout.playlists(s)) for x in p["songs"]})
    if len(in_pl) < 24:
        raise ConfigError(f"{root}: planting the hostile cases needs ≥ 24 songs in playlists, found {len(in_pl)}")
    rng = np.random.default_rng([seed, 99])
    victims = iter([int(v) for v in rng.permutation(in_pl)[:24]])
    expected = _plant_mel_faults(layout, victims, rng)
    no_genres, many, dups = _plant_song_meta_faults(layout, meta, victims)
    expected.update(no_genres)
    absent = max(e["id"] for e in meta) + 1000  # an id no song has
    return {"expected_skips": expected, "many_genres": many, "duplicates": dups,
            "unknown_entries": _plant_unknown_entries(layout, absent), "stray": _plant_stray_files(layout, absent)}


def _plant_mel_faults(layout: MelonLayout, victims, rng) -> dict:
    """Damage the mels of the next 16 victims, one way each → ``{song_id: reason}``."""
    expected = {}

    def mel_of(sid):
        return np.load(layout.mel_path(sid), allow_pickle=False)

    # missing
    for _ in range(2):
        sid = next(victims); os.unlink(layout.mel_path(sid)); expected[sid] = "missing"
    # truncated, garbage, corrupt header
    sid = next(victims); p = layout.mel_path(sid); data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2]); expected[sid] = "unreadable"
    sid = next(victims); open(layout.mel_path(sid), "wb").write(rng.bytes(4096)); expected[sid] = "unreadable"
    sid = next(victims); p = layout.mel_path(sid); data = bytearray(open(p, "rb").read())
    data[10:40] = b"{'descr': <garbage>, 'shape': ("; open(p, "wb").write(bytes(data)); expected[sid] = "unreadable"
    # pickled: object-dtype npy and a bare pickle (harmless payloads)
    sid = next(victims); np.save(layout.mel_path(sid), np.array([_Marker(), 1], dtype=object), allow_pickle=True)
    expected[sid] = "pickled"
    sid = next(victims); open(layout.mel_path(sid), "wb").write(pickle.dumps([1, 2, 3], protocol=4))
    expected[sid] = "pickled"
    # wrong dtype, shape, bands, length
    sid = next(victims); save_npy(layout.mel_path(sid), mel_of(sid).astype(np.int16)); expected[sid] = "bad_dtype"
    sid = next(victims); save_npy(layout.mel_path(sid), mel_of(sid).ravel()); expected[sid] = "bad_shape"
    sid = next(victims); save_npy(layout.mel_path(sid), mel_of(sid)[:40]); expected[sid] = "wrong_bands"
    sid = next(victims); save_npy(layout.mel_path(sid), mel_of(sid).T.copy()); expected[sid] = "wrong_bands"
    sid = next(victims); save_npy(layout.mel_path(sid), mel_of(sid)[:, :200]); expected[sid] = "too_short"
    # non-finite
    for bad in (np.inf, np.nan, -np.inf):
        sid = next(victims); m = mel_of(sid).copy(); m[5, 100] = bad; save_npy(layout.mel_path(sid), m)
        expected[sid] = "non_finite"
    # finite in float32 but beyond float16's range (records store float16)
    sid = next(victims); m = mel_of(sid).copy(); m[0, 0] = 1e6; save_npy(layout.mel_path(sid), m)
    expected[sid] = "out_of_range"
    return expected


def _plant_song_meta_faults(layout: MelonLayout, meta: list, victims) -> tuple[dict, list, dict]:
    """Rewrite ``song_meta.json`` with 2 songs without genres, 2 with 12 genres, 2 duplicated entries →
    ``({song_id: "no_genres"}, [ids with 12 genres], {duplicated id: its first entry's genres})``."""
    by_id = {e["id"]: e for e in meta}
    expected = {}
    # no genres: empty baskets, and the fields missing altogether
    sid = next(victims); by_id[sid]["song_gn_gnr_basket"] = []; by_id[sid]["song_gn_dtl_gnr_basket"] = []
    expected[sid] = "no_genres"
    sid = next(victims); del by_id[sid]["song_gn_gnr_basket"]; del by_id[sid]["song_gn_dtl_gnr_basket"]
    expected[sid] = "no_genres"
    # more than 10 genres (kept)
    with open(layout.genres, encoding="utf-8") as f:
        all_codes = sorted(json.load(f))
    many = []
    for _ in range(2):
        sid = next(victims)
        by_id[sid]["song_gn_gnr_basket"] = [c for c in all_codes if c.endswith("00")][:2]
        by_id[sid]["song_gn_dtl_gnr_basket"] = [c for c in all_codes if not c.endswith("00")][:10]
        many.append(sid)
    # duplicate song_meta entries (the first must win)
    dups = {}
    for _ in range(2):
        sid = next(victims)
        e = dict(by_id[sid]); e["song_gn_gnr_basket"] = ["GN0100"]; e["song_gn_dtl_gnr_basket"] = ["GN0101", "GN0102"]
        e["song_name"] = "duplicate"
        dups[sid] = list(dict.fromkeys(by_id[sid]["song_gn_gnr_basket"] + by_id[sid]["song_gn_dtl_gnr_basket"]))
        meta.append(e)
    write_json(layout.song_meta, meta)
    return expected, many, dups


def _plant_unknown_entries(layout: MelonLayout, absent: int) -> int:
    """Add 2 songs absent from ``song_meta`` (ids from ``absent``) to the first playlist of each file."""
    n_unknown = 0
    for s in PLAYLIST_FILES:
        with open(layout.playlists(s), encoding="utf-8") as f:
            raw = json.load(f)
        raw[0]["songs"] = raw[0]["songs"] + [absent + n_unknown, absent + n_unknown + 1]
        n_unknown += 2
        write_json(layout.playlists(s), raw)
    return n_unknown


def _plant_stray_files(layout: MelonLayout, absent: int) -> list:
    """Files in ``arena_mel`` that belong to no song of ``song_meta`` → their paths."""
    stray = [os.path.join(layout.mel_root, "README.txt"), os.path.join(layout.mel_root, "0", ".DS_Store"),
             os.path.join(layout.mel_root, "0", "0.npy.bak"), layout.mel_path(absent + 777)]
    for p in stray:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if p.endswith(".npy"):
            save_npy(p, np.zeros((48, 300), np.float32))
        else:
            open(p, "wb").write(b"stray")
    return stray
