"""Tiny downstream datasets in the REAL layouts (GTZAN, MTG-Jamendo, Melon + prepared split) and fake
embedders, shared by the tests of the cache, the three protocols and the evaluation CLI.

A fake embedder whose embeddings carry the class signal (a fixed random projection of per-patch
log-spectrum statistics) must score high, and a noise embedder (random vectors seeded by the file path)
must score near chance — so each protocol measures what it claims. The fixtures ``gtzan``, ``jamendo``
and ``melon`` are imported by the test modules that use them (each module builds its own copy).
"""
import hashlib
import os

import numpy as np
import pytest
from scipy.io import wavfile

from cmir_tf.data.melon import MelonLayout, load_mel, write_mel
from cmir_tf.evaluate.cache import Model
from cmir_tf.evaluate.downstream import Params
from cmir_tf.evaluate.gtzan import GTZAN_GENRES, GTZAN_LISTS
from cmir_tf.fileio import write_json

FAST = Params(runs=2, gtzan_max_iter=300, jamendo_max_epochs=15, jamendo_patience=5, jamendo_batch_size=8,
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
            from cmir_tf.audio.decoding import load_audio

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


def fake_model(embed, name="fake"):
    return Model(name, embed, key=name)


def tone(freqs, seconds, rate, rng):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * rng.uniform(0.98, 1.02) * t + rng.uniform(0, 6))
            for f in freqs)
    return x + 0.02 * rng.normal(size=t.size)


# ------------------------------------------------------------------------------------------- GTZAN
@pytest.fixture(scope="module")
def gtzan(tmp_path_factory):
    """genres/<g>/<g>.000NN.wav (22050 Hz, 16-bit, 9 s) and the three filtered split lists."""
    root = tmp_path_factory.mktemp("gtzan")
    splits = root / "splits"
    splits.mkdir()
    rng = np.random.default_rng(0)
    lists = {"train": [], "valid": [], "test": []}
    for gi, g in enumerate(GTZAN_GENRES):
        (root / "genres" / g).mkdir(parents=True)
        f0 = 150 + 90 * gi
        for n in range(8):
            rel = f"{g}/{g}.{n:05d}.wav"
            x = tone([f0, 2 * f0, 3 * f0], 9.0, 22050, rng)
            wavfile.write(root / "genres" / rel, 22050, (x * 20000).astype(np.int16))
            lists["train" if n < 4 else "valid" if n < 5 else "test"].append(rel)
    for split, name in GTZAN_LISTS.items():
        (splits / name).write_text("\n".join(lists[split]) + "\n")
    return root, splits


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
        x = 0.5 * tone([JAMENDO_TAGS[t] for t in g + inst if t in JAMENDO_TAGS], 4.5, 44100, rng)
        soundfile.write(audio / rel, x.astype(np.float32), 44100, format="MP3")
        tracks.append((tid, rel, g, inst))
    for cat, col in (("genre", 2), ("instrument", 3)):
        for split, sl in (("train", slice(0, 40)), ("validation", slice(40, 55)), ("test", slice(55, 75))):
            rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
            for tr in tracks[sl]:
                rows.append("\t".join([f"track_{tr[0]:07d}", "artist_1", "album_1", tr[1], "4.5", *tr[col]]))
            (splits / f"autotagging_{cat}-{split}.tsv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return audio, splits


# --------------------------------------------------------------------------------------- playlists
def make_melon(root, rng, n_genres=10, per_genre=20):
    """Melon layout with planted structure: a song's mel is loud in its genre's 4-band block; a playlist
    takes its songs from one genre. Returns (melon layout, prepared dir)."""
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
    return make_melon(tmp_path_factory.mktemp("melon"), np.random.default_rng(2))
