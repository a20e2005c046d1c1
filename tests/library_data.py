"""A tiny music library made by the tests: short tones written by soundfile, tagged by mutagen."""
from __future__ import annotations

import os

import numpy as np

RATE = 16000
SECONDS = 4.5  # > one 256-frame patch (4.1 s)


def tone(freq: float, seconds: float = SECONDS, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_audio(path, freq: float, fmt: str | None = None, seed: int = 0, seconds: float = SECONDS) -> str:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    kw = {"ogg": dict(format="OGG", subtype="VORBIS"), "mp3": dict(format="MP3", subtype="MPEG_LAYER_III"),
          "flac": dict(format="FLAC"), "wav": dict(format="WAV", subtype="PCM_16")}[fmt or ext[1:]]
    sf.write(path, tone(freq, seconds, seed), RATE, **kw)
    return path


def tag(path, **values) -> None:
    """Write easy tags (genre, artist, album, title: str or list) with mutagen."""
    import mutagen

    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    for k, v in values.items():
        f[k] = v if isinstance(v, list) else [v]
    f.save()


def make_library(root, albums=None) -> dict:
    """``root/Artist/Album/NN.ext`` for each album ``{(artist, album): [(fmt, genre or None), ...]}``;
    returns ``{relative path: (artist, album, genre)}``."""
    albums = albums or {("Ann", "First"): [("ogg", "Rock"), ("flac", "Rock; Pop"), ("wav", None)],
                        ("Bob", "Second"): [("mp3", "Jazz"), ("ogg", "jazz"), ("flac", "Jazz/Pop")]}
    out = {}
    for a, ((artist, album), tracks) in enumerate(sorted(albums.items())):
        for i, (fmt, genre) in enumerate(tracks):
            rel = os.path.join(artist, album, f"{i:02d}.{fmt}")
            path = write_audio(os.path.join(root, rel), 200 + 150 * a + 20 * i, seed=a * 10 + i)
            if fmt != "wav" and genre is not None:
                tag(path, genre=genre, title=f"track {i}")
            out[rel] = (artist, album, genre)
    return out
