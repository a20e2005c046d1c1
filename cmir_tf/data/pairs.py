"""Audio pairs: pairs of different songs that share a playlist, an artist or a genre, drawn anew every
epoch (numpy only; ``cmir_tf.data.pair_pipeline`` streams their crops).

**What prepare stores** (:func:`relations`, :func:`records_index`; files owned by ``cmir_tf.data.prepared``):
for each split, one *relation* per source — ``(n, 2)`` int64 rows ``(group, song)`` sorted, where a
group is a playlist (its position in Melon's train/val/test.json, read in that order), an artist id
(``artist_id_basket``) or a genre (its vocabulary index, every genre of the song, major and detailed),
restricted to the split's songs — and the split's *records index*, ``(n, 4)`` int64 rows
``(song, shard, offset, length)``: where each song's Example lies (the shard's position in the split's
sorted shard list, the byte offset and length of the serialized Example).

**One epoch's pairs** (:class:`PairSampler`), as the study's public code draws them: shuffle the groups;
in each, take its songs not yet used this epoch (``exclusive``: playlist, genre) or all of them
(artist), shuffle them and cut them into consecutive pairs (an odd one out is left, and stays available
to later groups); with ``exclusive`` a paired song is used for the epoch. The epoch's pairs are then
shuffled, so a batch holds pairs of many groups. The draw is a function of the numpy generator it is
given (the pipeline seeds it with ``(seed, epoch)``).
"""
from __future__ import annotations

import numpy as np

from cmir_tf.data.tfrecords import record_spans
from cmir_tf.errors import DataError

# The sources of audio pairs: songs sharing a playlist / an artist / a genre, or two crops of one song.
AUDIO_PAIRS = ("playlist", "artist", "genre", "self")
EXCLUSIVE = {"playlist": True, "artist": False, "genre": True}  # a song in at most one pair per epoch


def _relation(groups, songs) -> np.ndarray:
    """Unique (group, song) rows, sorted by group then song."""
    rel = np.stack([np.asarray(groups, np.int64), np.asarray(songs, np.int64)], axis=1).reshape(-1, 2)
    rel = rel[np.lexsort((rel[:, 1], rel[:, 0]))]
    return rel[np.r_[True, np.any(rel[1:] != rel[:-1], axis=1)]] if len(rel) else rel


def _by_song(songs, keys_of) -> np.ndarray:
    keys = [keys_of(s) for s in songs]
    return _relation(np.fromiter((k for ks in keys for k in ks), np.int64),
                     np.repeat(np.asarray(songs, np.int64), [len(ks) for ks in keys]))


def relations(songs: list[int], playlists: list[list[int]], meta_songs: dict, genre_index: dict) -> dict:
    """``{source: (n, 2) int64 (group, song) rows}`` of ``songs`` (module docstring). ``meta_songs``:
    ``{id: melon.Song}``; ``genre_index``: ``{genre code: vocabulary index}``."""
    songs = sorted(int(s) for s in songs)
    entries = np.fromiter((s for pl in playlists for s in pl), np.int64)
    owner = np.repeat(np.arange(len(playlists), dtype=np.int64), [len(pl) for pl in playlists])
    mine = np.isin(entries, np.asarray(songs, np.int64))
    return {
        "playlist": _relation(owner[mine], entries[mine]),
        "artist": _by_song(songs, lambda s: [int(a) for a in meta_songs[s].artist_id_basket]),
        "genre": _by_song(songs, lambda s: [genre_index[c] for c in meta_songs[s].genres if c in genre_index]),
    }


def records_index(shards: list[tuple[str, list[int], np.ndarray]]) -> np.ndarray:
    """``(n, 4)`` int64 ``(song, shard, offset, length)`` from each shard's (name, songs in write order,
    (offset, length) of its records from ``tfrecords.record_spans``), shards in sorted order; rows
    sorted by song."""
    parts = []
    for shard, (name, songs, spans) in enumerate(shards):
        if len(songs) != len(spans):
            raise DataError(f"{name}: {len(spans)} records for the {len(songs)} songs its done-record lists")
        songs = np.asarray(songs, np.int64).reshape(-1, 1)
        parts.append(np.hstack([songs, np.full_like(songs, shard), np.asarray(spans, np.int64).reshape(-1, 2)]))
    index = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    return index[np.argsort(index[:, 0], kind="stable")]


def write_pair_data(out, split: str, songs: list[int], meta: dict, genre_index: dict, written: dict, *,
                    compressed: bool = False) -> None:
    """Prepare's step: the relations of ``songs`` and, for uncompressed shards, the records index from
    ``written`` ``{shard name: its songs in write order}`` (done-records) and each shard's framing.
    ``out``: the ``PreparedData``; ``meta``: ``song_split.load_metadata``'s dict."""
    index = None
    if written and not compressed:
        shards = [(out.shard_path(split, name), written[name], record_spans(out.shard_path(split, name)))
                  for name in sorted(written)]
        index = records_index(shards)
    out.write_pair_data(split, relations(songs, meta["playlists"], meta["songs"], genre_index), index)


class PairSampler:
    """Draws one epoch's pairs from a relation (module docstring)."""

    def __init__(self, relation: np.ndarray, exclusive: bool):
        relation = np.asarray(relation, np.int64).reshape(-1, 2)
        relation = relation[np.lexsort((relation[:, 1], relation[:, 0]))]
        self.songs, dense = np.unique(relation[:, 1], return_inverse=True)
        starts = np.flatnonzero(np.r_[True, relation[1:, 0] != relation[:-1, 0]]) if len(relation) else []
        groups = np.split(dense.astype(np.int64), starts[1:]) if len(relation) else []
        self.groups = [g for g in groups if len(g) > 1]
        self.exclusive = bool(exclusive)

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """``(P, 2)`` int64 song ids: this epoch's pairs, in random order."""
        used = np.zeros(len(self.songs), bool)
        out = []
        for g in rng.permutation(len(self.groups)):
            songs = self.groups[g]
            if self.exclusive:
                songs = songs[~used[songs]]
            if len(songs) < 2:
                continue
            songs = rng.permutation(songs)[: 2 * (len(songs) // 2)]
            if self.exclusive:
                used[songs] = True
            out.append(songs.reshape(-1, 2))
        pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
        return self.songs[pairs[rng.permutation(len(pairs))]]
