"""The artists of the synthetic Melon set (``cmir_tf.synth.generator``): who sings what, and how it sounds.

* :func:`assign_artists` — about ``n_artists`` artists spread over the (major genre, taste) cells in
  proportion to their songs (at least one a cell); a song's artist is drawn among its cell's artists.
  Songs of one artist therefore share genre and taste, as an artist's songs tend to.
* :func:`artist_sound` — every artist's audio signature, shared by all its songs: a narrow spectral bump
  (±2–3.5 dB), a slight change (±7 %) of its genre's rhythm rate, and a "motif", a fast amplitude
  modulation (4–6 dB, 0.15–0.3 cycles a frame) of a narrow band region, which leaves the band means
  unchanged.

Every draw comes from a stream of its own (``numpy.random.default_rng`` on the seed, a tag and the
artist or song id), so the genre, taste and noise draws of a song are those it has without artists.
"""
from __future__ import annotations

import numpy as np

from cmir_tf.constants import N_BANDS


def assign_artists(cell: np.ndarray, n_artists: int, rng: np.random.Generator) -> np.ndarray:
    """Artist id of each song from its cell (any integer label); ids are a shuffled 0 … A−1."""
    cells, counts = np.unique(cell, return_counts=True)
    per_cell = np.maximum(1, np.round(counts * n_artists / len(cell))).astype(int)
    first = np.concatenate([[0], np.cumsum(per_cell)[:-1]])
    at = np.searchsorted(cells, cell)
    local = np.floor(rng.random(len(cell)) * per_cell[at]).astype(int)
    return rng.permutation(int(per_cell.sum()))[first[at] + local]


def artist_signature(artist: int, seed: int) -> dict:
    """``{"bump" (48,) dB, "factor" on the rhythm rate, "bands" (48,) of the motif, "rate", "depth"}``."""
    rng = np.random.default_rng([seed, 6, int(artist)])
    b = np.arange(N_BANDS)
    c, w, h = rng.uniform(0, N_BANDS), rng.uniform(1.5, 3.0), rng.uniform(2.0, 3.5) * rng.choice([-1.0, 1.0])
    c2, w2 = rng.uniform(0, N_BANDS), rng.uniform(2.0, 4.0)
    return {"bump": h * np.exp(-0.5 * ((b - c) / w) ** 2), "factor": float(rng.uniform(0.93, 1.07)),
            "bands": np.exp(-0.5 * ((b - c2) / w2) ** 2), "rate": float(rng.uniform(0.15, 0.3)),
            "depth": float(rng.uniform(4.0, 6.0))}


def artist_sound(artist: int | None, song_id: int, seed: int, n_frames: int):
    """``(bump (48,), rate factor, motif (48, n_frames))`` of one song of ``artist`` (None: no artist)."""
    if artist is None:
        return 0.0, 1.0, 0.0
    sig = artist_signature(artist, seed)
    phase = np.random.default_rng([seed, 7, int(song_id)]).uniform(0, 2 * np.pi)
    t = np.arange(n_frames)[None, :]
    motif = sig["depth"] * sig["bands"][:, None] * np.sin(2 * np.pi * sig["rate"] * t + phase)
    return sig["bump"], sig["factor"], motif
