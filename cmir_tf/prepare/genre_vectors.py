"""The genre vocabulary and its word2vec vectors: the genre side input the audio is aligned to.

* **Vocabulary** (:func:`build_vocab`): every genre code of the given songs (major ``GNxx00`` and
  detailed ``GNxxyy``), sorted, so a major comes before its detailed codes; index i is row i of the
  matrix; names come from ``genre_gn_all.json`` (a code missing there gets ``""``).
* **Vectors** (:func:`train_word2vec`): gensim skip-gram on the songs' genre baskets (major + detailed),
  seeded and single-threaded, with a hash that does not depend on ``PYTHONHASHSEED`` — so a seed gives
  the same matrix in every process.

Named ``genre_vectors`` rather than ``word2vec``: in this package ``word2vec`` is the matrix (the
prepared folder's word2vec file, the ``word2vec`` argument of the genre encoder, many local variables),
and a module of that name would be shadowed by, or shadow, those variables.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from cmir_tf.constants import W2V_DIM
from cmir_tf.errors import DataError

W2V_MIN_TOKENS = 200_000  # tiny corpora get more epochs: at least this many tokens seen in training …
W2V_MAX_EPOCHS = 200  # … but no more than this many epochs


def build_vocab(songs: dict, ids, genre_names: dict) -> list:
    """``[{"index", "code", "name"}]`` over every genre code of the songs ``ids``, sorted by code."""
    codes = sorted({c for sid in ids for c in songs[sid].genres})
    return [{"index": i, "code": c, "name": genre_names.get(c, "")} for i, c in enumerate(codes)]


def _stable_hash(s):  # gensim's seeded vectors must not depend on PYTHONHASHSEED
    return zlib.crc32(str(s).encode("utf-8"))


W2V_MODELS = ("skipgram", "cbow")


def train_word2vec(baskets, vocab: list, dim: int = W2V_DIM, seed: int = 0, epochs: int = 5,
                   model: str = "skipgram") -> np.ndarray:
    """Skip-gram word2vec on genre baskets → ``(len(vocab), dim)`` float32, row i = vocabulary index i.

    A basket is a whole "sentence" (window = the longest basket). No frequent-word down-sampling
    (``sample=0``): with ~250 codes the majors are the frequent "words", and down-sampling them dropped
    most of them (on 250 synthetic songs, detailed→own-major nearest neighbour 11 % vs 51 % without).
    Small corpora get ``min(200, ceil(W2V_MIN_TOKENS / tokens))`` epochs if that is more than ``epochs``.
    ``model="cbow"``: the published code's ``train_genre_w2v.py`` settings instead — gensim's defaults
    (CBOW, down-sampling ``sample=1e-3``) with the same window, ``min_count=1`` and seed.
    """
    if model not in W2V_MODELS:
        raise DataError(f"--w2v-model: unknown model {model!r}; choose one of {', '.join(W2V_MODELS)}")
    from gensim.models import Word2Vec

    baskets = [list(b) for b in baskets if b]
    if not baskets:
        raise DataError("no song has a genre: cannot train the genre word2vec")
    window = max(2, max(len(b) for b in baskets))
    n_tokens = sum(len(b) for b in baskets)
    epochs = max(int(epochs), min(W2V_MAX_EPOCHS, math.ceil(W2V_MIN_TOKENS / n_tokens)))
    sg, sample = (1, 0) if model == "skipgram" else (0, 1e-3)
    w2v = Word2Vec(sentences=baskets, vector_size=dim, window=window, min_count=1, sg=sg, negative=5, sample=sample,
                   epochs=epochs, workers=1, seed=seed, hashfxn=_stable_hash)
    mat = np.zeros((len(vocab), dim), np.float32)
    for v in vocab:
        mat[v["index"]] = w2v.wv[v["code"]]
    return mat
