"""Melon folder (real or synthetic) or a music library → a prepared folder: split, CF vectors, genre
word2vec, TFRecords.

``python -m cmir_tf.prepare --melon DIR --out DIR [--workers N] [--seed S] ...``
``python -m cmir_tf.prepare --library DIR --out DIR [--tags FILE] [--min-genre-count N] ...``

A library (:class:`cmir_tf.data.library.LibrarySource`) is another source of the same things — songs with
genres, artists and albums, playlists — plus an audio file per song: steps 1–2 take them from it
(scan, tags, playlists, ids; no mel check: a file the decoder refuses is skipped at step 7), step 3
also balances each song's album, and step 7 computes each mel from the audio with ``embed``'s path.

:func:`prepare` runs named steps over one :class:`Preparation` (the run's inputs and what each step
decides); the folder it writes is described, and owned, by :class:`cmir_tf.data.prepared.PreparedData`.

1. **Open** (:func:`_open`): check the Melon folder; fingerprint the parameters and the metadata files
   (SHA-256 of the parameters and of each JSON file's name, size and mtime; mels are not fingerprinted);
   load the plan an earlier run cached in the output folder's state.
2. **Songs** (:func:`_choose_songs`, :mod:`cmir_tf.prepare.song_split`): candidates (in a playlist, with a genre,
   a mel passing the header check), every other song's skip reason, the genre vocabulary.
3. **Split** (:func:`_split`): iterative multi-label stratification 0.8/0.1/0.1 on the genres, seeded.
4. **CF** (:func:`_fit_cf`, :mod:`cmir_tf.prepare.cf`): ``implicit`` BPR (or ALS) on the playlists restricted
   to the train+val songs; test songs get no vector (cold start).
5. **Word2vec** (:func:`_fit_word2vec`, :mod:`cmir_tf.prepare.genre_vectors`): gensim skip-gram on the
   candidates' genre baskets, seeded and single-threaded.
6. **Shard plan** (:func:`_plan_shards`): each split's songs shuffled with the seed, in shards of
   ``shard_size`` songs; the plan and the side inputs are cached in the state.
7. **Records** (:func:`_write_records`, :mod:`cmir_tf.prepare.shard_writer`): the unfinished shards, by
   ``workers`` processes. A song whose mel values fail (``non_finite``, or ``out_of_range`` for float16)
   is skipped there and recorded, so a split can lose those few songs after it was drawn (Melon: a
   handful among 650k). A record holds ALL the song's genres (the pipeline truncates to T_w = 10).
8. **Finish** (:func:`_finish`): split lists (songs written), vocabulary, word2vec, the written songs'
   CF vectors, the audio-pair data (:func:`cmir_tf.data.pairs.write_pair_data`), and the manifest last:
   its presence means the folder is complete.

Resume: a shard is finished when its done-record exists, the file has the size it records and its
records' checksums hold (read back by the workers); any other is rewritten. Steps 2–6 run once: a rerun
with the same fingerprint loads them from the state; another fingerprint raises
:class:`~cmir_tf.errors.ConfigError`. Everything is deterministic for a seed (same bytes on a fresh run).
The output folder is checked, created and locked by :class:`~cmir_tf.data.prepared.PreparedData`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cmir_tf.constants import CF_DIM, MAX_GENRES, SPLITS, W2V_DIM
from cmir_tf.data.melon import PLAYLIST_FILES, MelonLayout
from cmir_tf.data.pairs import write_pair_data
from cmir_tf.data.prepared import PAIR_SPLITS, PreparedData
from cmir_tf.data.tfrecords import shard_name
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.lock import folder_lock
from cmir_tf.prepare.cf import BPR_LEARNING_RATE, check_cf_params, train_cf
from cmir_tf.prepare.genre_vectors import W2V_MODELS, build_vocab, train_word2vec
from cmir_tf.prepare.shard_writer import finished_shards, write_shards
from cmir_tf.prepare.song_split import RATIOS, load_metadata, scan_mels, select_songs, stratified_split


@dataclass
class PrepareParams:
    """The parameters of a preparation: recorded in the manifest and hashed into the fingerprint."""

    seed: int = 0
    cf_dim: int = CF_DIM
    w2v_dim: int = W2V_DIM
    cf_model: str = "bpr"
    cf_iterations: int | None = None
    cf_threads: int = 1
    cf_learning_rate: float = BPR_LEARNING_RATE
    w2v_epochs: int = 5
    shard_size: int = 256
    compress: bool = False
    ratios: tuple = RATIOS
    metadata_only: bool = False
    w2v_model: str = "skipgram"  # or "cbow" (the published code's); recorded only when not the default

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be ≥ 1, got {self.shard_size}")
        check_cf_params(self.cf_model, self.cf_dim)
        if self.w2v_dim < 1:
            raise ConfigError(f"w2v_dim must be ≥ 1, got {self.w2v_dim}")
        if self.w2v_model not in W2V_MODELS:
            raise ConfigError(f"--w2v-model: unknown model {self.w2v_model!r}; choose one of {', '.join(W2V_MODELS)}")

    def as_dict(self) -> dict:
        """The manifest's ``params`` (key order as in every manifest so far)."""
        out = {**dataclasses.asdict(self), "ratios": list(self.ratios)}
        if self.w2v_model == "skipgram":  # manifests and fingerprints of default preparations stay as they were
            del out["w2v_model"]
        return out


@dataclass
class Preparation:
    """One run of :func:`prepare`: its resolved inputs, then what each step decides."""

    melon: MelonLayout
    out: PreparedData
    params: PrepareParams
    workers: int = 1
    progress: bool = True
    verbose: bool = True
    fingerprint: str = ""
    resumed: bool = False  # steps 2–6 were loaded from the state, not run
    meta: dict = field(default_factory=dict)  # load_metadata(): songs, genre_names, playlists, stats
    ids: list = field(default_factory=list)  # candidate songs, sorted
    skipped: dict = field(default_factory=dict)  # {song id: reason} decided before the records
    vocab: list = field(default_factory=list)  # [{"index", "code", "name"}]
    splits: dict = field(default_factory=dict)  # {split: sorted song ids}
    cf_ids: np.ndarray | None = None  # songs with a CF vector, row-aligned with cf
    cf: np.ndarray | None = None
    cf_info: dict = field(default_factory=dict)
    word2vec: np.ndarray | None = None
    shards: dict = field(default_factory=dict)  # {split: [{"name", "songs"}]}
    seconds: dict = field(default_factory=dict)  # step times: split, cf, word2vec

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def genre_index(self) -> dict:
        """``{genre code: vocabulary index}``."""
        return {v["code"]: v["index"] for v in self.vocab}

    def plan(self) -> dict:
        """What the state's plan file holds (the side inputs are cached beside it)."""
        return {"fingerprint": self.fingerprint, "params": self.params.as_dict(), "splits": self.splits,
                "shards": self.shards, "cf": self.cf_info, "seconds": self.seconds,
                "skipped": [[int(k), v] for k, v in sorted(self.skipped.items())]}

    def resume(self, plan: dict, cache: dict) -> None:
        """Take steps 2–6's results from a cached plan (checked by ``PreparedData.read_plan``) and side inputs."""
        self.splits, self.shards, self.cf_info, self.seconds = plan["splits"], plan["shards"], plan["cf"], plan["seconds"]
        self.skipped = {int(k): v for k, v in plan["skipped"]}
        self.vocab, self.word2vec, self.cf_ids, self.cf = cache["vocab"], cache["word2vec"], cache["cf_ids"], cache["cf"]
        self.resumed = True


# ------------------------------------------------------------------------------------------- steps
_FLAGS = {"compress": "--gzip", "ratios": "split ratios"}  # parameters whose flag is not --<name with ->


def _what_differs(plan: dict, params: PrepareParams, library: bool = False) -> str:
    """The parameters a cached plan was made with that differ from ``params``, named as their flags
    (``--seed 1, now 2``); else the inputs (the Melon metadata files changed since)."""
    old = plan.get("params") if isinstance(plan.get("params"), dict) else {}
    new = params.as_dict()
    diffs = [f"{_FLAGS.get(k, '--' + k.replace('_', '-'))} {old[k]!r}, now {new[k]!r}"
             for k in new if k in old and old[k] != new[k]]
    if diffs:
        return "other parameters: " + "; ".join(diffs)
    return "other inputs (" + ("audio files, playlists or the tags sidecar of the library added, removed or "
                               "changed" if library else "the Melon metadata files changed") + ")"


def _is_library(source) -> bool:
    return getattr(source, "is_library", False)


def _open(melon_dir, out_dir, params: PrepareParams, *, overwrite: bool, workers: int, progress: bool,
          verbose: bool) -> Preparation:
    """Step 1: check the inputs, fingerprint them, start (or resume) the state in ``out_dir``."""
    layout = melon_dir if _is_library(melon_dir) else MelonLayout(melon_dir)
    layout.check()
    p = Preparation(layout, PreparedData(out_dir), params, workers=workers, progress=progress, verbose=verbose)
    if _is_library(layout):
        layout.open(p.out)  # scan and number the songs (keeping the ids of an earlier run here)
        p.fingerprint = layout.fingerprint(params.as_dict())
    else:
        p.fingerprint = _fingerprint(layout, params.as_dict())
    if overwrite:
        p.out.clear()
    p.out.start()
    if _is_library(layout):
        layout.write_ids(p.out)
    plan = p.out.read_plan()
    if plan is not None:
        if plan.get("fingerprint") != p.fingerprint:
            raise ConfigError(f"{p.out.root}: already prepared with {_what_differs(plan, params, _is_library(layout))} "
                              f"({p.out.plan_path}); rerun with --overwrite to discard it, or choose another --out")
        p.resume(plan, p.out.read_cache())
        p.log(f"resuming {p.out.root}: plan, vocabulary, word2vec and CF loaded from {p.out.state.root}")
    p.meta = layout.load_metadata(workers, progress) if _is_library(layout) else load_metadata(layout.root)
    return p


def _choose_songs(p: Preparation) -> None:
    """Step 2: candidate songs, skip reasons, genre vocabulary."""
    if _is_library(p.melon):
        p.ids, p.skipped = p.melon.select(p.meta)
        if not p.ids:
            raise DataError(f"{p.melon.root}: no song of the library is in a playlist or an album"
                            + (" and has a genre" if p.meta["genre_names"] else "") + ": nothing to prepare "
                            "(albums come from album tags, the Artist/Album/track folders or --tags; playlists "
                            "from .m3u/.m3u8 files)")
        p.vocab = build_vocab(p.meta["songs"], p.ids, p.meta["genre_names"])
        return
    ids, skipped = select_songs(p.meta)
    if not ids:
        files = ", ".join(os.path.basename(p.melon.playlists(s)) for s in PLAYLIST_FILES)
        raise DataError(f"{p.melon.root}: no song of {os.path.basename(p.melon.song_meta)} is in a playlist of "
                        f"{files} and has a genre: nothing to prepare")
    if p.params.metadata_only:
        p.log(f"{len(ids)} songs in playlists with genres (metadata only)")
    else:
        p.log(f"{len(ids)} songs in playlists with genres; checking their mels")
        bad = scan_mels(p.melon.root, ids, p.workers, p.progress)
        skipped.update(bad)
        ids = [s for s in ids if s not in bad]
    p.ids, p.skipped = ids, skipped
    p.vocab = build_vocab(p.meta["songs"], ids, p.meta["genre_names"])


def _split(p: Preparation) -> None:
    """Step 3: the stratified split."""
    index, songs = p.genre_index(), p.meta["songs"]
    t = time.time()
    labels, n_labels = [[index[c] for c in songs[s].genres] for s in p.ids], len(p.vocab)
    if _is_library(p.melon):  # the albums are balanced too (their labels follow the genres')
        strata = {s: p.melon.strata(s) for s in p.ids}
        labels = [g + ([n_labels + strata[s]] if strata[s] is not None else []) for g, s in zip(labels, p.ids)]
        n_labels += 1 + max((v for v in strata.values() if v is not None), default=-1)
    p.splits = stratified_split(p.ids, labels, n_labels, p.params.seed)
    p.seconds["split"] = round(time.time() - t, 1)
    p.log(f"split {len(p.ids)} songs in {time.time() - t:.1f} s: "
          + ", ".join(f"{s} {len(p.splits[s])}" for s in SPLITS))


def _fit_cf(p: Preparation) -> None:
    """Step 4: CF vectors of the train+val songs."""
    q, t = p.params, time.time()
    p.cf_ids, p.cf, p.cf_info = train_cf(p.meta["playlists"], p.splits["train"] + p.splits["val"], q.cf_dim,
                                         q.cf_model, q.seed, q.cf_iterations, q.cf_threads, progress=p.progress,
                                         learning_rate=q.cf_learning_rate)
    p.cf_info["seconds"] = p.seconds["cf"] = round(time.time() - t, 1)
    p.log(f"CF ({q.cf_model}, {q.cf_dim} values, {p.cf_info['iterations']} iterations, "
          f"{p.cf_info['nnz']} entries) for {len(p.cf_ids)} songs in {time.time() - t:.1f} s")


def _fit_word2vec(p: Preparation) -> None:
    """Step 5: the genre word2vec matrix."""
    q, t = p.params, time.time()
    if not p.vocab:  # a library without genres: an empty table; the modes using genres refuse it
        p.word2vec = np.zeros((0, q.w2v_dim), np.float32)
        p.log("no genres: no word2vec (the modes using genres cannot train on this folder)")
        return
    p.word2vec = train_word2vec([p.meta["songs"][s].genres for s in p.ids], p.vocab, q.w2v_dim, q.seed,
                                q.w2v_epochs, q.w2v_model)
    p.seconds["word2vec"] = round(time.time() - t, 1)
    p.log(f"word2vec ({len(p.vocab)} genres × {q.w2v_dim}) in {p.seconds['word2vec']} s")


def _plan_shards(p: Preparation) -> None:
    """Step 6: shuffled shards per split; cache the plan and the side inputs."""
    size = p.params.shard_size
    rng = np.random.default_rng([p.params.seed, 5])
    for s in SPLITS:
        order = [int(v) for v in rng.permutation(np.asarray(p.splits[s], np.int64))]
        n = math.ceil(len(order) / size)
        p.shards[s] = [{"name": shard_name(s, i, n, p.params.compress), "songs": order[i * size:(i + 1) * size]}
                       for i in range(n)]
    p.out.write_state(p.plan(), p.vocab, p.word2vec, p.cf_ids, p.cf)


PLAN_STEPS = (_choose_songs, _split, _fit_cf, _fit_word2vec, _plan_shards)


def _write_records(p: Preparation) -> dict:
    """Step 7: write every unfinished shard → ``{shard name: done-record}`` of all shards."""
    index, songs = p.genre_index(), p.meta["songs"]
    cf_row = {int(s): i for i, s in enumerate(p.cf_ids)}
    done, tasks = finished_shards(p.out, p.shards, p.workers, p.progress, p.log), []
    for s in SPLITS:
        for sh in p.shards[s]:
            if sh["name"] in done:
                continue
            tasks.append({"melon": p.melon.root, "out": p.out.root, "split": s, "name": sh["name"],
                          "compress": bool(p.params.compress),
                          **(p.melon.task_fields(sh["songs"]) if _is_library(p.melon) else {}),
                          "songs": [(sid, [index[c] for c in songs[sid].genres],
                                     p.cf[cf_row[sid]] if s != "test" and sid in cf_row else None)
                                    for sid in sh["songs"]]})
    p.log(f"writing {sum(len(t['songs']) for t in tasks)} songs in {len(tasks)} shards "
          f"({len(done)} shards already finished)")
    for record in write_shards(tasks, p.workers, p.progress):
        done[record["shard"]] = record
    return done


def _collect(p: Preparation, done: dict) -> tuple[dict, dict, dict]:
    """The songs written per split (sorted), every skip reason, the shard names per split."""
    skipped = dict(p.skipped)
    written, files = {s: [] for s in SPLITS}, {s: [] for s in SPLITS}
    for s in SPLITS:
        for sh in p.shards[s]:
            if p.params.metadata_only:
                written[s].extend(sh["songs"])
                continue
            record = done[sh["name"]]
            written[s].extend(record["written"])
            skipped.update({int(k): v for k, v in record["skipped"]})
            files[s].append(sh["name"])
        written[s] = sorted(written[s])
    return written, skipped, files


def _finish(p: Preparation, done: dict, t0: float) -> dict:
    """Step 8: write the folder's files, the manifest last; return the manifest."""
    written, skipped, files = _collect(p, done)
    keep = np.isin(p.cf_ids, np.asarray(written["train"] + written["val"], np.int64))
    songs, meta, q = p.meta["songs"], p.meta, p.params
    stats = dict(meta["stats"])
    stats.update({"songs_in_playlists": len({x for pl in meta["playlists"] for x in pl}),
                  "songs_over_max_genres": sum(1 for s in SPLITS for sid in written[s]
                                               if len(songs[sid].genres) > MAX_GENRES),
                  "genres_missing_from_genre_gn_all": sum(1 for v in p.vocab if v["code"] not in meta["genre_names"]),
                  "cf": p.cf_info, "stage_seconds": p.seconds, "seconds": round(time.time() - t0, 1)})
    manifest = {
        "counts": {s: len(written[s]) for s in SPLITS},
        "skipped": [{"song_id": k, "reason": v} for k, v in sorted(skipped.items())],
        "skipped_by_reason": dict(sorted(Counter(skipped.values()).items())),
        "stats": stats,
        "params": q.as_dict(),
        "versions": _versions(),
        "shards": files,
        "n_genres": len(p.vocab),
        "cf_dim": q.cf_dim,
        "w2v_dim": q.w2v_dim,
        "metadata_only": bool(q.metadata_only),
        "compressed": bool(q.compress),
        **(p.melon.manifest_fields() if _is_library(p.melon) else {}),
    }
    for s in PAIR_SPLITS:  # the audio-pair data; reads the shards' framing only, rewrites no shard
        write_pair_data(p.out, s, written[s], p.meta, p.genre_index(), {n: done[n]["written"] for n in files[s]},
                        compressed=p.params.compress)
    if _is_library(p.melon):  # what `evaluate playlists` reads: every playlist, test songs included
        p.out.write_library_playlists(p.meta["library"]["playlists_from"], p.meta["playlists"],
                                      p.meta["playlist_names"])
    p.out.write_outputs(splits=written, vocab=p.vocab, word2vec=p.word2vec, cf_ids=p.cf_ids[keep], cf=p.cf[keep],
                        manifest=manifest)
    return manifest


def _fingerprint(layout: MelonLayout, params: dict) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for path in (layout.song_meta, layout.genres, *(layout.playlists(s) for s in PLAYLIST_FILES)):
        st = os.stat(path)
        h.update(f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("numpy", "scipy", "implicit", "gensim", "iterative-stratification", "tensorflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------------------ public
def prepare(melon_dir, out_dir, *, workers: int = 1, seed: int = 0, cf_dim: int = CF_DIM,
            w2v_dim: int = W2V_DIM, cf_model: str = "bpr", cf_iterations: int | None = None,
            cf_threads: int = 1, cf_learning_rate: float = BPR_LEARNING_RATE, w2v_epochs: int = 5,
            shard_size: int = 256, compress: bool = False,
            metadata_only: bool = False, overwrite: bool = False, progress: bool = True,
            verbose: bool = True, w2v_model: str = "skipgram") -> dict:
    """Prepare ``melon_dir`` into ``out_dir`` (see the module docstring); returns the manifest dict.

    ``melon_dir``: a Melon folder, or a :class:`cmir_tf.data.library.LibrarySource` (a music library).

    ``metadata_only=True`` runs steps 1–6 without opening a mel (every song with genres counts as
    usable) and writes no shard — the metadata path at Melon scale (``benchmarks/prepare_scale.py``).
    ``workers > 1`` uses ``spawn`` processes (no fork after TensorFlow/OpenMP threads): a script calling
    this must guard its top level with ``if __name__ == "__main__":``.
    """
    t0 = time.time()
    if workers < 1:
        raise ConfigError(f"workers must be ≥ 1, got {workers}")
    params = PrepareParams(seed=seed, cf_dim=cf_dim, w2v_dim=w2v_dim, cf_model=cf_model, cf_iterations=cf_iterations,
                           cf_threads=cf_threads, cf_learning_rate=cf_learning_rate, w2v_epochs=w2v_epochs,
                           shard_size=shard_size, compress=bool(compress), metadata_only=bool(metadata_only),
                           w2v_model=w2v_model)
    params.check()
    out = PreparedData(out_dir)
    out.create()
    with folder_lock(out.root):
        p = _open(melon_dir, out_dir, params, overwrite=overwrite, workers=workers, progress=progress,
                  verbose=verbose)
        if not p.resumed:
            for step in PLAN_STEPS:
                step(p)
        manifest = _finish(p, {} if params.metadata_only else _write_records(p), t0)
    if verbose:
        print(summary(manifest))
    return manifest


def summary(manifest: dict) -> str:
    """The human-readable count summary printed at the end of :func:`prepare`."""
    c, st = manifest["counts"], manifest["stats"]
    what = "songs per split (metadata only, no records)" if manifest.get("metadata_only") else "records written"
    lines = [f"{what}: train {c['train']}, val {c['val']}, test {c['test']} "
             f"({manifest['n_genres']} genres, CF {manifest['cf_dim']}, word2vec {manifest['w2v_dim']})",
             f"songs in song_meta {st['songs_in_meta']} (duplicate entries ignored: {st['duplicate_song_meta']}), "
             f"in playlists {st['songs_in_playlists']}; playlists {st['playlists']}, entries "
             f"{st['playlist_entries']} (naming unknown songs, ignored: {st['unknown_playlist_entries']})",
             f"songs with more than {MAX_GENRES} genres (kept, truncated by the pipeline): "
             f"{st['songs_over_max_genres']}",
             f"skipped {len(manifest['skipped'])} songs: "
             + (", ".join(f"{k} {v}" for k, v in manifest["skipped_by_reason"].items()) or "none")]
    if "library" in manifest:
        from cmir_tf.data.library import library_summary

        lines.append(library_summary(manifest["library"]))
    return "\n".join(lines)
