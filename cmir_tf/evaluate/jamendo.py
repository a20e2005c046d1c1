"""MTG-Jamendo automatic tagging (paper Table 2): a tagging MLP on track vectors, macro ROC-AUC.

Layout read (:func:`read_jamendo`), per category ``genre``, ``instrument`` or ``moodtheme``:

- ``SPLITS/autotagging_{category}-{train,validation,test}.tsv`` from the ``mtg-jamendo-dataset``
  repository (e.g. ``data/splits/split-0``): UTF-8, tab-separated, CRLF line ends (LF or a mix is read
  too), header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``; tags from column 6 on, one per
  column, named ``category---value`` (``genre---rock``, ``instrument---piano``, ``mood/theme---happy``);
- audio at ``AUDIO/PATH`` (``NN/ID.mp3``; the download's low-quality ``NN/ID.low.mp3`` is accepted in
  its place).

Every TSV of every category asked for is read and checked before anything is embedded. A TSV is refused
as a whole with one line naming it (and the line) when it is empty, not UTF-8, its header differs
(the column is named), a row has fewer than 6 columns or no PATH, a PATH leads outside the audio
folder (``..``, an absolute path, a symbolic link out: a corrupted or hostile list) or names a missing
file. A listed file
that exists but cannot be decoded is skipped and reported (:mod:`cmir_tf.evaluate.cache`).

Protocol (:func:`jamendo_protocol`): a track is the mean of its patch embeddings, inputs standardised
on the training split; a Keras MLP Dense 128 → BatchNorm → ReLU → Dense 64 → BatchNorm → ReLU →
Dropout 0.5 → Dense sigmoid (one unit per tag; ``Params.jamendo_*``: Adam lr 1e-3, batch 64) trained
with binary cross-entropy and early stopping on the validation loss (patience 10, at most 100 epochs,
best weights restored); macro ROC-AUC (scikit-learn) on test, ``Params.runs`` runs seeded
``seed + r``. A tag without both a positive and a negative test track has no ROC-AUC: it is left out of
the average and listed in ``excluded_tags``. Each category is evaluated on its own split; a track shared
by several categories is embedded once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.evaluate.cache import EmbeddingCache, Model
from cmir_tf.evaluate.downstream import Params, read_lines, require_dir, require_files, summary
from cmir_tf.fileio import inside

__all__ = ["JAMENDO_SPLITS", "JAMENDO_HEADER", "read_jamendo", "read_jamendo_categories", "jamendo_protocol",
           "evaluate_jamendo", "evaluate_jamendo_splits"]

JAMENDO_SPLITS = ("train", "validation", "test")
JAMENDO_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")


def _check_header(path: Path, rows: list[tuple[int, str]]) -> None:
    expected = " ".join(JAMENDO_HEADER)
    if not rows:
        raise DataError(f"{path}: empty file (expected the header {expected}, tab-separated)")
    got = [c.strip() for c in rows[0][1].split("\t")]
    for i, want in enumerate(JAMENDO_HEADER):
        if i >= len(got):
            raise DataError(f"{path}:1: header has {len(got)} column(s), no {want}; expected {expected} "
                            "(tab-separated)")
        if got[i] != want:
            raise DataError(f"{path}:1: header column {i + 1} is {got[i]!r}, expected {want!r} "
                            f"(header {expected}, tab-separated)")


def _read_tsv(path: Path) -> list[tuple[int, str, str, list[str]]]:
    """One split TSV → ``[(line number, track id, relative audio path, tags)]``."""
    if not path.is_file():
        raise DataError(f"{path}: MTG-Jamendo split file is missing")
    rows = read_lines(path, "MTG-Jamendo split file")
    _check_header(path, rows)
    out = []
    for n, row in rows[1:]:
        if not row.strip():
            continue
        cols = [c.strip() for c in row.split("\t")]
        if len(cols) < 6:
            raise DataError(f"{path}:{n}: {len(cols)} columns, expected TRACK_ID ... PATH DURATION TAGS...")
        if not cols[3]:
            raise DataError(f"{path}:{n}: the PATH column is empty")
        out.append((n, cols[0], cols[3], [t for t in cols[5:] if t]))
    if not out:
        raise DataError(f"{path}: no tracks")
    return out


def read_jamendo(jamendo_dir, splits_dir, category: str) -> dict[str, list[tuple[str, Path, list[str]]]]:
    """One category's split → ``{"train"|"validation"|"test": [(track id, audio path, tags)]}``."""
    if category not in JAMENDO_CATEGORIES:
        raise ConfigError(f"MTG-Jamendo: unknown category {category!r} "
                          f"(choose from {', '.join(JAMENDO_CATEGORIES)})")
    root = require_dir(jamendo_dir, "MTG-Jamendo audio folder")
    splits = require_dir(splits_dir, "MTG-Jamendo split folder")
    out = {}
    for split in JAMENDO_SPLITS:
        tsv = splits / f"autotagging_{category}-{split}.tsv"
        items = []
        for n, tid, rel, tags in _read_tsv(tsv):
            p = Path(inside(root, rel, f"{tsv}:{n}"))
            if not p.is_file() and p.suffix == ".mp3" and p.with_suffix(".low.mp3").is_file():
                p = p.with_suffix(".low.mp3")  # the download's low-quality audio
            items.append((tid, p, tags))
        require_files([p for _, p, _ in items], f"MTG-Jamendo audio files listed in {tsv} are")
        out[split] = items
    return out


def read_jamendo_categories(jamendo_dir, splits_dir, categories=JAMENDO_CATEGORIES) -> dict[str, dict]:
    """:func:`read_jamendo` of every category → ``{category: split}`` (all read before any embedding)."""
    categories = list(categories)
    if not categories:
        raise ConfigError(f"MTG-Jamendo: no category given (choose from {', '.join(JAMENDO_CATEGORIES)})")
    return {cat: read_jamendo(jamendo_dir, splits_dir, cat) for cat in dict.fromkeys(categories)}


def _tagging_mlp(n_inputs: int, n_tags: int, params: Params):
    """The compiled Keras tagging MLP (see the module doc)."""
    import keras

    inputs = keras.Input((n_inputs,))
    h = inputs
    for width in params.jamendo_hidden:
        h = keras.layers.Dense(width)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.Dropout(params.jamendo_dropout)(h)
    outputs = keras.layers.Dense(n_tags, activation="sigmoid")(h)
    net = keras.Model(inputs, outputs)
    net.compile(optimizer=keras.optimizers.Adam(params.jamendo_lr), loss="binary_crossentropy")
    return net


def jamendo_protocol(data: dict[str, tuple[np.ndarray, list[list[str]]]], params: Params = Params()) -> dict:
    """Tagging MLP on track vectors; ``data[split] = (vectors (N, D), tags per track)`` → macro ROC-AUC."""
    import keras
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

    tags = sorted({t for _, tl in data.values() for ts in tl for t in ts})
    mlb = MultiLabelBinarizer(classes=tags)
    x = {s: data[s][0] for s in JAMENDO_SPLITS}
    y = {s: mlb.fit_transform(data[s][1]).astype(np.float32) for s in JAMENDO_SPLITS}
    scaler = StandardScaler().fit(x["train"])
    x = {s: scaler.transform(v).astype(np.float32) for s, v in x.items()}
    positives = y["test"].sum(axis=0)
    defined = (positives > 0) & (positives < len(y["test"]))
    excluded = [t for t, ok in zip(tags, defined) if not ok]
    if not defined.any():
        raise DataError("MTG-Jamendo test split: no tag has both positive and negative tracks, ROC-AUC is undefined")
    aucs = []
    for run in range(params.runs):
        keras.utils.set_random_seed(params.seed + run)
        net = _tagging_mlp(x["train"].shape[1], len(tags), params)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.jamendo_patience,
                                             restore_best_weights=True)
        net.fit(x["train"], y["train"], validation_data=(x["validation"], y["validation"]),
                epochs=params.jamendo_max_epochs, batch_size=params.jamendo_batch_size,
                callbacks=[stop], verbose=0)
        scores = net.predict(x["test"], batch_size=1024, verbose=0)
        aucs.append(roc_auc_score(y["test"][:, defined], scores[:, defined], average="macro"))
        keras.backend.clear_session()
    return {**summary(aucs), "n_tags": len(tags), "n_tags_evaluated": int(defined.sum()),
            "excluded_tags": excluded, "n_tracks": {s: len(y[s]) for s in JAMENDO_SPLITS}}


def evaluate_jamendo(jamendo_dir, splits_dir, model: Model, *, categories=JAMENDO_CATEGORIES,
                     params: Params = Params(), cache_dir=None) -> dict:
    """Read every category's TSVs (:func:`read_jamendo_categories`), then :func:`evaluate_jamendo_splits`."""
    return evaluate_jamendo_splits(read_jamendo_categories(jamendo_dir, splits_dir, categories), model,
                                   params=params, cache_dir=cache_dir)


def evaluate_jamendo_splits(splits: dict[str, dict], model: Model, *, params: Params = Params(),
                            cache_dir=None) -> dict:
    """Embed the audio of every category's split (each file once, cached; a track is the mean of its
    patches) and run :func:`jamendo_protocol` per category → ``{category: result, "skipped": [{path,
    reason}] (unreadable files, left out everywhere), "embedded": files embedded now}``."""
    embed = EmbeddingCache(model, cache_dir, "jamendo")
    paths = sorted({p for split in splits.values() for items in split.values() for _, p, _ in items})
    emb, skipped = embed.embed_all(paths, desc=f"{model.name} jamendo", progress=params.progress)
    results = {}
    for cat, split in splits.items():
        data = {}
        for s, items in split.items():
            kept = [(emb[p].mean(axis=0), tags) for _, p, tags in items if p in emb]
            if not kept:
                raise DataError(f"MTG-Jamendo {cat} {s}: no readable track ({len(items)} listed, all unreadable)")
            data[s] = (np.stack([v for v, _ in kept]), [t for _, t in kept])
        results[cat] = jamendo_protocol(data, params)
    return {**results, "skipped": skipped, "embedded": embed.misses}
