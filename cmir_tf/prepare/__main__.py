"""The prepare command: ``python -m cmir_tf.prepare --melon DIR | --library DIR --out OUT`` (``cmir-prepare``).

A thin door over :func:`cmir_tf.prepare.preparation.prepare`: flags, ``--variant published``'s
data flags, a music library as the source (:class:`cmir_tf.data.library.LibrarySource`).
"""
from __future__ import annotations

import argparse
import sys

from cmir_tf import cli
from cmir_tf.constants import CF_DIM, W2V_DIM
from cmir_tf.data.tfrecords import GZIP_SUFFIX, SHARD_SUFFIX
from cmir_tf.errors import ConfigError
from cmir_tf.prepare.cf import BPR_LEARNING_RATE, CF_MODELS
from cmir_tf.prepare.genre_vectors import W2V_MODELS
from cmir_tf.prepare.preparation import prepare


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m cmir_tf.prepare",
        description="Turn a Melon folder (real or synthetic) into training data: stratified 80/10/10 split, "
                    "CF vectors (implicit), genre word2vec (gensim), sharded TFRecords and a manifest. "
                    "A rerun into the same --out resumes (finished shards are not rewritten).")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--melon", help="Melon folder (song_meta.json, genre_gn_all.json, train/val/test.json, "
                                        "arena_mel/)")
    source.add_argument("--library", help="a music folder: audio files (wav flac ogg opus mp3) with their tags, "
                                          "M3U/M3U8 playlists (none: albums serve as playlists)")
    ap.add_argument("--tags", help="library: CSV/TSV sidecar (path, genres, artists, album, title) overriding "
                                   "the files' tags")
    ap.add_argument("--min-genre-count", type=int, default=1,
                    help="library: drop genres of fewer songs than this (default 1: keep all)")
    ap.add_argument("--ignore-genres", action="store_true",
                    help="library: use no genre (every song kept; only modes without genre terms train)")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--workers", type=int, default=1, help="processes writing shards (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, CF, word2vec and shard order")
    ap.add_argument("--cf-dim", type=int, default=CF_DIM, help=f"CF vector size F_cf (default {CF_DIM})")
    ap.add_argument("--w2v-dim", type=int, default=W2V_DIM, help=f"genre word2vec size F_w (default {W2V_DIM})")
    ap.add_argument("--cf-model", choices=CF_MODELS, default="bpr",
                    help="implicit model: bpr (default; closest to the paper's WARP) or als")
    ap.add_argument("--cf-iterations", type=int, default=None,
                    help="CF training iterations (default: als 15; bpr 60M SGD samples / matrix entries, "
                         "clamped to 10..200 — 10 at Melon scale)")
    ap.add_argument("--cf-threads", type=int, default=1,
                    help="CF threads (default 1: BPR is deterministic only single-threaded)")
    ap.add_argument("--cf-learning-rate", type=float, default=BPR_LEARNING_RATE,
                    help=f"BPR learning rate (default {BPR_LEARNING_RATE}, lightfm's; implicit's 0.01 learns "
                         "too slowly at Melon scale)")
    ap.add_argument("--w2v-epochs", type=int, default=5,
                    help="word2vec epochs (default 5; small corpora get more, up to 200k tokens seen)")
    ap.add_argument("--w2v-model", choices=W2V_MODELS, default=None,
                    help="genre word2vec: skipgram (default) or cbow, the published code's gensim defaults")
    ap.add_argument("--variant", choices=("paper", "published"), default="paper",
                    help="published: the data `train --variant published` needs, i.e. --w2v-model cbow "
                         "--w2v-dim 128 --cf-dim 301 (128-d CBOW genre vectors as the published "
                         "embedding_matrix_128.npy; 300 factors + the item bias as its CF vectors) and "
                         "--cf-iterations 50 unless given; those flags cannot be set otherwise with it")
    ap.add_argument("--shard-size", type=int, default=256, help="songs per TFRecord shard (default 256)")
    ap.add_argument("--gzip", action="store_true", help=f"GZIP the shards (*{SHARD_SUFFIX}{GZIP_SUFFIX})")
    ap.add_argument("--metadata-only", action="store_true",
                    help="split, CF and word2vec only: no mel is opened and no shard written")
    ap.add_argument("--overwrite", action="store_true",
                    help="discard a previous preparation in --out instead of resuming it")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def _apply_variant(a) -> None:
    """``--variant published`` sets the published data flags (a contradicting flag is a ConfigError)."""
    published = {"w2v_model": "cbow", "w2v_dim": 128, "cf_dim": 301}
    if a.variant == "published":
        for key, value in published.items():
            given = getattr(a, key)
            if given is not None and given != value and not (key != "w2v_model" and given == _DEFAULTS[key]):
                raise ConfigError(f"--{key.replace('_', '-')} {given}: --variant published needs {value}")
            setattr(a, key, value)
        if a.cf_iterations is None:
            a.cf_iterations = 50  # the published LightFM epochs (BPR iterations here)
    elif a.w2v_model is None:
        a.w2v_model = "skipgram"


_DEFAULTS = {"w2v_dim": W2V_DIM, "cf_dim": CF_DIM}


@cli.command
def main(argv=None) -> int:
    a = parser().parse_args(argv)
    _apply_variant(a)
    for flag, value, minimum in (("--workers", a.workers, 1), ("--shard-size", a.shard_size, 1),
                                 ("--cf-dim", a.cf_dim, 2), ("--w2v-dim", a.w2v_dim, 1)):
        if value < minimum:
            raise ConfigError(f"{flag} must be ≥ {minimum}, got {value}")
    if a.min_genre_count < 1:
        raise ConfigError(f"--min-genre-count must be ≥ 1, got {a.min_genre_count}")
    source = a.melon
    if a.library is not None:
        from cmir_tf.data.library import LibrarySource

        source = LibrarySource(a.library, sidecar=a.tags, min_genre_count=a.min_genre_count,
                               ignore_genres=a.ignore_genres)
    elif a.tags or a.ignore_genres or a.min_genre_count != 1:
        raise ConfigError("--tags, --min-genre-count and --ignore-genres apply to --library only")
    if a.gzip and not a.metadata_only:
        print("warning: --gzip: the audio-pair strategies (train --audio-pairs, modes aim_*, ss, hybrid) read "
              "records by offset and cannot train on GZIP shards; the paper's modes and cm can",
              file=sys.stderr, flush=True)
    prepare(source, a.out, workers=a.workers, seed=a.seed, cf_dim=a.cf_dim, w2v_dim=a.w2v_dim,
            cf_model=a.cf_model, cf_iterations=a.cf_iterations, cf_threads=a.cf_threads,
            cf_learning_rate=a.cf_learning_rate, w2v_epochs=a.w2v_epochs, shard_size=a.shard_size,
            compress=a.gzip, metadata_only=a.metadata_only, overwrite=a.overwrite, progress=not a.no_progress,
            w2v_model=a.w2v_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
