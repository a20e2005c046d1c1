"""Downstream evaluation (paper sec. 3.3, Tables 1–3): GTZAN genres, MTG-Jamendo tagging, Melon playlist
continuation, and a report of several models in the layout of the paper's tables.

Each protocol reads the dataset's real layout (reference.md §3), embeds every track once per model
(cached on disk), and trains / scores on the embeddings:

- **gtzan** — fault-filtered split lists ``{train,valid,test}_filtered.txt`` (``blues/blues.00000.wav``)
  over ``genres/<genre>/<genre>.000NN.wav``. Every patch embedding of a training track is an instance of
  its genre; an MLP with one hidden layer of 256 ReLU (scikit-learn, inputs standardised on the training
  set, seeded per run) predicts each test patch, and a track takes the majority vote of its patches
  (a tie goes to the tied genre with the highest mean probability). The valid list is not used for
  training (the paper trains on the 443 training tracks and tests on the 290 test tracks).
  Mean ± std (numpy's population std) of the test accuracy over the runs.
- **jamendo** — ``autotagging_{category}-{train,validation,test}.tsv`` (tab-separated, CRLF, header
  ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``, tags from column 6 on), audio at ``DIR/PATH``
  (``NN/ID.mp3``; the download's ``NN/ID.low.mp3`` is accepted too). A track is the mean of its patch
  embeddings; a Keras MLP Dense 128 → BN → ReLU → Dense 64 → BN → ReLU → Dropout → Dense sigmoid is
  trained with binary cross-entropy and early stopping on the validation loss (best weights restored);
  macro ROC-AUC (scikit-learn) on test. A tag without both a positive and a negative test track has no
  ROC-AUC: it is left out of the macro average and listed in ``excluded_tags``.
- **playlists** — the playlists of Melon's ``train/val/test.json`` holding at least one song of the
  prepared test split (``PREPARED_DIR/splits.json``). Relevant = the playlist's test songs; queries =
  its songs of the train/val splits (songs outside the prepared splits have no usable mel and are
  ignored). A playlist whose songs are all test songs has no query: it is counted in
  ``n_no_query`` and left out of the averages (of the model and of the random baseline alike).
  Each query song's ``k`` nearest test songs come from an annoy angular index
  (:class:`cmir_tf.similar.SimilarityIndex`); the ``k`` test songs retrieved most often over the
  playlist's queries are the prediction (ties: higher summed cosine, then lower song id); nDCG@k and
  MAP@k (:mod:`cmir_tf.metrics`) against the relevant songs. The random baseline ranks ``k`` test songs
  drawn uniformly without replacement (seeded).

The protocols take a :class:`Model` — a name, a cache key and ``embed(path) -> patches (P, D)`` — so they
run with any embedding function; :func:`load_model` wires an export folder to ``cmir_tf.embed.Embedder``.

    python -m cmir_tf.evaluate gtzan --model export/ --gtzan GTZAN --splits gtzan_splits
    python -m cmir_tf.evaluate all --models contr_cf_g=exp1 contr_g=exp2 --gtzan GTZAN \\
        --gtzan-splits S --jamendo MTG --jamendo-splits MTG/data/splits/split-0 --data prep --melon melon \\
        --out report/
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.errors import CmirError, ConfigError, DataError
from cmir_tf.fileio import save_npy, write_json
from cmir_tf.melon import MelonLayout, read_playlists
from cmir_tf.metrics import average_precision_at_k, ndcg_at_k
from cmir_tf.report import markdown, mean_std, write_report
from cmir_tf.similar import SimilarityIndex

__all__ = [
    "Params", "Model", "EmbeddingCache", "model_fingerprint", "load_model",
    "read_gtzan", "read_jamendo", "read_playlist_task",
    "gtzan_protocol", "jamendo_protocol", "playlist_protocol",
    "evaluate_gtzan", "evaluate_jamendo", "evaluate_playlists", "evaluate_models",
    "write_report", "main",
]

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_LISTS = {"train": "train_filtered.txt", "valid": "valid_filtered.txt", "test": "test_filtered.txt"}
JAMENDO_SPLITS = ("train", "validation", "test")
JAMENDO_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "cmir_tf", "embeddings")



@dataclass
class Params:
    """Protocol settings; the defaults are the paper's (sizes) or common choices (optimiser details)."""

    runs: int = 10
    seed: int = 0
    gtzan_hidden: int = 256
    gtzan_max_iter: int = 200  # scikit-learn epochs (stops earlier when the training loss plateaus)
    jamendo_hidden: tuple = (128, 64)
    jamendo_dropout: float = 0.5
    jamendo_max_epochs: int = 100
    jamendo_patience: int = 10
    jamendo_batch_size: int = 64
    jamendo_lr: float = 1e-3
    k: int = 100
    n_trees: int = 50
    progress: bool = True


# ------------------------------------------------------------------------------------------ embedding
def model_fingerprint(export_dir: str | os.PathLike) -> str:
    """A cache key for an export: SHA-256 of its SavedModel's ``saved_model.pb`` and variable files.

    The weights live in ``variables/``, so two trainings of the same architecture (identical graphs)
    still get different keys.
    """
    sm = _saved_model_dir(export_dir)
    h = hashlib.sha256()
    files = [sm / "saved_model.pb", *sorted((sm / "variables").glob("*"))]
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _saved_model_dir(export_dir) -> Path:
    d = Path(export_dir)
    if (d / "saved_model.pb").is_file():
        return d
    versions = [p for base in (d / "saved_model", d) for p in base.glob("*")
                if p.name.isdigit() and (p / "saved_model.pb").is_file()]  # export folder or TF Serving base
    if not versions:
        raise ConfigError(f"--model {d}: no saved_model.pb (expected {d}/saved_model/<N>/saved_model.pb, "
                          "written by python -m cmir_tf.export)")
    return max(versions, key=lambda p: int(p.name))


@dataclass
class Model:
    """A model under evaluation: ``embed(path) -> patch embeddings (P, D)``, and a key for the cache.

    ``embed_many(paths)``, when given, yields ``(path, patches or None, error or None)`` in input order
    and is used for whole datasets (an exported model batches patches across files that way).
    """

    name: str
    embed: Callable[[str], np.ndarray]
    key: str
    embed_many: Callable | None = None


def load_model(name: str, export_dir: str | os.PathLike) -> Model:
    """A :class:`Model` for an export folder; the TensorFlow model loads on the first cache miss only."""
    key = model_fingerprint(export_dir)
    holder = {}

    def embedder():
        if "embedder" not in holder:
            from cmir_tf.embed import Embedder

            holder["embedder"] = Embedder(os.fspath(export_dir))
        return holder["embedder"]

    def embed(path):
        return np.asarray(embedder().embed_file(os.fspath(path))[0])

    def embed_many(paths):
        for path, patches, _, error in embedder().embed_files([os.fspath(p) for p in paths]):
            yield path, patches, error

    return Model(name, embed, key, embed_many)


class EmbeddingCache:
    """``embed(path)`` memoised on disk at ``root/<model key>/<dataset>/<xx>/<hash>.npy``.

    The hash covers the absolute path, size and modification time of the input, so a changed file is
    embedded again; a dataset is embedded once per model.
    """

    def __init__(self, model: Model, root: str | os.PathLike | None, dataset: str):
        self.model = model
        self.dir = None if root is None else Path(root) / model.key / dataset
        self.misses = 0

    def _entry(self, path: str) -> Path | None:
        if self.dir is None:
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: file is missing") from None
        key = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        return self.dir / key[:2] / f"{key}.npy"

    @staticmethod
    def _load(entry: Path | None):
        if entry is not None and entry.is_file():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
        return None

    def _store(self, entry: Path | None, arr, path) -> np.ndarray:
        self.misses += 1
        arr = _check_patches(arr, path)
        if entry is not None:
            save_npy(entry, arr)
        return arr

    def __call__(self, path) -> np.ndarray:
        """One file's patch embeddings, from the cache or embedded (and stored) now."""
        path = os.path.abspath(os.fspath(path))
        entry = self._entry(path)
        arr = self._load(entry)
        return arr if arr is not None else self._store(entry, self.model.embed(path), path)

    def embed_all(self, paths, *, desc: str = "embedding", progress: bool = True):
        """Patch embeddings of many files → ``({path: (P, D)}, skipped [{path, reason}])``.

        Cached files are read back; the others go through ``model.embed_many`` (batched) when the model
        has it, else one by one. A file that cannot be read (a :class:`CmirError`, ``OSError`` or
        ``ValueError``) is skipped and reported, not fatal: real collections hold a few broken files.
        """
        from tqdm.auto import tqdm

        out, skipped, todo = {}, [], []
        for p in paths:
            try:
                entry = self._entry(os.path.abspath(os.fspath(p)))
            except DataError as e:
                skipped.append({"path": str(p), "reason": str(e)})
                continue
            arr = self._load(entry)
            if arr is None:
                todo.append((p, entry))
            else:
                out[p] = arr
        with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo, file=sys.stderr) as bar:
            if self.model.embed_many is not None and todo:
                results = self.model.embed_many([os.path.abspath(os.fspath(p)) for p, _ in todo])
                for (p, entry), (_, arr, error) in zip(todo, results):
                    try:
                        if error is not None:  # the embedder could not read this file
                            skipped.append({"path": str(p), "reason": str(error)})
                        else:
                            out[p] = self._store(entry, arr, p)
                    except (CmirError, OSError, ValueError) as e:
                        skipped.append({"path": str(p), "reason": str(e)})
                    bar.update()
            else:
                for p, entry in todo:
                    try:
                        out[p] = self._store(entry, self.model.embed(os.path.abspath(os.fspath(p))), p)
                    except (CmirError, OSError, ValueError) as e:
                        skipped.append({"path": str(p), "reason": str(e)})
                    bar.update()
        if skipped:
            print(f"{desc}: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]['path']}: "
                  f"{skipped[0]['reason']}", file=sys.stderr)
        return out, skipped


def _check_patches(arr, path) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{path}: embedder returned shape {arr.shape}, expected (patches, dim)")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: embedder returned NaN or inf")
    return arr


def _require_dir(path, flag) -> Path:
    if path is None:
        raise ConfigError(f"{flag} is required")
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{flag} {p}: folder does not exist")
    return p


def _report_missing(paths, what) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"{len(missing)} {what} missing: {', '.join(missing[:5])}{more}")


def _summary(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": values}


# ---------------------------------------------------------------------------------------------- GTZAN
def read_gtzan(gtzan_dir, splits_dir) -> dict[str, list[tuple[Path, str]]]:
    """The fault-filtered split → ``{"train"|"valid"|"test": [(wav path, genre)]}`` (valid may be empty)."""
    root = _require_dir(gtzan_dir, "--gtzan")
    splits = _require_dir(splits_dir, "--splits")
    audio = root / "genres" if (root / "genres").is_dir() else root
    out = {}
    for split, name in GTZAN_LISTS.items():
        f = splits / name
        if not f.is_file():
            if split == "valid":
                out[split] = []
                continue
            raise DataError(f"{f}: GTZAN split list is missing (expected {', '.join(GTZAN_LISTS.values())})")
        items = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            parts = rel.replace("\\", "/").split("/")
            if len(parts) != 2 or not parts[1].startswith(parts[0] + "."):
                raise DataError(f"{f}:{n}: expected a line like blues/blues.00000.wav, got {rel!r}")
            items.append((audio / parts[0] / parts[1], parts[0]))
        if not items:
            raise DataError(f"{f}: GTZAN split list is empty")
        _report_missing([p for p, _ in items], f"GTZAN files listed in {f} are")
        out[split] = items
    return out


def gtzan_protocol(train: list[tuple[np.ndarray, str]], test: list[tuple[np.ndarray, str]],
                   params: Params = Params()) -> dict:
    """Patch-level MLP, per-track majority vote; ``train``/``test`` are ``[(patches (P, D), genre)]``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([p for p, _ in train])
    y = np.concatenate([[g] * len(p) for p, g in train])
    scaler = StandardScaler().fit(x)
    x = scaler.transform(x)
    test_x = [scaler.transform(p) for p, _ in test]
    truth = [g for _, g in test]
    accuracies = []
    for run in range(params.runs):
        clf = MLPClassifier(hidden_layer_sizes=(params.gtzan_hidden,), activation="relu",
                            max_iter=params.gtzan_max_iter, random_state=params.seed + run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        correct = 0
        for px, g in zip(test_x, truth):
            proba = clf.predict_proba(px)
            votes = np.bincount(proba.argmax(axis=1), minlength=len(clf.classes_))
            tied = np.flatnonzero(votes == votes.max())
            winner = tied[np.argmax(proba.mean(axis=0)[tied])]
            correct += clf.classes_[winner] == g
        accuracies.append(100.0 * correct / len(test))
    return {**_summary(accuracies), "n_train_tracks": len(train), "n_test_tracks": len(test),
            "n_train_instances": int(len(y))}


def evaluate_gtzan(gtzan_dir, splits_dir, model: Model, *, params: Params = Params(),
                   cache_dir=None, _keep_embeddings: dict | None = None) -> dict:
    """Read the GTZAN layout, embed it with ``model`` (cached) and run :func:`gtzan_protocol`."""
    split = read_gtzan(gtzan_dir, splits_dir)
    embed = EmbeddingCache(model, cache_dir, "gtzan")
    paths = [p for s in ("train", "test") for p, _ in split[s]]
    emb, skipped = embed.embed_all(paths, desc=f"{model.name} gtzan", progress=params.progress)
    train = [(emb[p], g) for p, g in split["train"] if p in emb]
    test = [(emb[p], g) for p, g in split["test"] if p in emb]
    if not train or not test:
        raise DataError(f"--gtzan {gtzan_dir}: no readable training or test track")
    if _keep_embeddings is not None:
        _keep_embeddings["gtzan"] = [(e.mean(axis=0), g) for e, g in test]
    return {**gtzan_protocol(train, test, params), "skipped": skipped, "embedded": embed.misses}


# ------------------------------------------------------------------------------------------- Jamendo
def _read_tsv(path: Path) -> list[tuple[str, str, list[str]]]:
    if not path.is_file():
        raise DataError(f"{path}: MTG-Jamendo split file is missing")
    rows = path.read_bytes().decode("utf-8").splitlines()  # CRLF or LF
    if not rows or tuple(c.strip() for c in rows[0].split("\t")[:6]) != JAMENDO_HEADER:
        raise DataError(f"{path}: header is not {' '.join(JAMENDO_HEADER)} (tab-separated)")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row.strip():
            continue
        cols = [c.strip() for c in row.split("\t")]
        if len(cols) < 6:
            raise DataError(f"{path}:{n}: {len(cols)} columns, expected TRACK_ID ... PATH DURATION TAGS...")
        out.append((cols[0], cols[3], [t for t in cols[5:] if t]))
    if not out:
        raise DataError(f"{path}: no tracks")
    return out


def read_jamendo(jamendo_dir, splits_dir, category: str) -> dict[str, list[tuple[str, Path, list[str]]]]:
    """One category's split → ``{"train"|"validation"|"test": [(track id, audio path, tags)]}``."""
    if category not in JAMENDO_CATEGORIES:
        raise ConfigError(f"--categories: unknown category {category!r} (choose from {', '.join(JAMENDO_CATEGORIES)})")
    root = _require_dir(jamendo_dir, "--jamendo")
    splits = _require_dir(splits_dir, "--splits")
    out = {}
    for split in JAMENDO_SPLITS:
        tsv = splits / f"autotagging_{category}-{split}.tsv"
        items = []
        for tid, rel, tags in _read_tsv(tsv):
            p = root / rel
            if not p.is_file() and p.suffix == ".mp3" and p.with_suffix(".low.mp3").is_file():
                p = p.with_suffix(".low.mp3")  # the download's low-quality audio
            items.append((tid, p, tags))
        _report_missing([p for _, p, _ in items], f"MTG-Jamendo audio files listed in {tsv} are")
        out[split] = items
    return out


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
        inputs = keras.Input((x["train"].shape[1],))
        h = inputs
        for width in params.jamendo_hidden:
            h = keras.layers.Dense(width)(h)
            h = keras.layers.BatchNormalization()(h)
            h = keras.layers.ReLU()(h)
        h = keras.layers.Dropout(params.jamendo_dropout)(h)
        outputs = keras.layers.Dense(len(tags), activation="sigmoid")(h)
        net = keras.Model(inputs, outputs)
        net.compile(optimizer=keras.optimizers.Adam(params.jamendo_lr), loss="binary_crossentropy")
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.jamendo_patience,
                                             restore_best_weights=True)
        net.fit(x["train"], y["train"], validation_data=(x["validation"], y["validation"]),
                epochs=params.jamendo_max_epochs, batch_size=params.jamendo_batch_size,
                callbacks=[stop], verbose=0)
        scores = net.predict(x["test"], batch_size=1024, verbose=0)
        aucs.append(roc_auc_score(y["test"][:, defined], scores[:, defined], average="macro"))
        keras.backend.clear_session()
    return {**_summary(aucs), "n_tags": len(tags), "n_tags_evaluated": int(defined.sum()),
            "excluded_tags": excluded, "n_tracks": {s: len(y[s]) for s in JAMENDO_SPLITS}}


def evaluate_jamendo(jamendo_dir, splits_dir, model: Model, *, categories=JAMENDO_CATEGORIES,
                     params: Params = Params(), cache_dir=None) -> dict:
    """Per category: read the TSVs, embed the audio (cached, mean of patches), run :func:`jamendo_protocol`."""
    embed = EmbeddingCache(model, cache_dir, "jamendo")
    results, memo = {}, {}  # the categories share most tracks: embed each once even without a disk cache
    for cat in categories:
        split = read_jamendo(jamendo_dir, splits_dir, cat)
        paths = sorted({p for items in split.values() for _, p, _ in items})
        todo = [p for p in paths if p not in memo]
        new, skipped = embed.embed_all(todo, desc=f"{model.name} jamendo {cat}", progress=params.progress)
        memo.update(new)
        emb = {p: memo[p] for p in paths if p in memo}
        data = {}
        for s, items in split.items():
            kept = [(emb[p].mean(axis=0), tags) for _, p, tags in items if p in emb]
            if not kept:
                raise DataError(f"MTG-Jamendo {cat} {s}: no readable track")
            data[s] = (np.stack([v for v, _ in kept]), [t for _, t in kept])
        results[cat] = {**jamendo_protocol(data, params), "skipped": skipped}
    return {**results, "embedded": embed.misses}


# ----------------------------------------------------------------------------------------- playlists
def read_playlist_task(data_dir, melon_dir) -> dict:
    """Playlists with ≥ 1 test song → ``{"playlists": [(id, queries, relevant)], "test_ids", "n_no_query",
    "n_with_test"}``; song ids are ints, queries are the playlist's train/val songs."""
    data = _require_dir(data_dir, "--data")
    layout = MelonLayout(_require_dir(melon_dir, "--melon"))
    splits_path = data / "splits.json"
    if not splits_path.is_file():
        raise DataError(f"{splits_path}: missing (write it with python -m cmir_tf.prepare)")
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    if not isinstance(splits, dict) or not all(s in splits for s in ("train", "val", "test")):
        raise DataError(f"{splits_path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    test = {int(s) for s in splits["test"]}
    known = {int(s) for s in splits["train"]} | {int(s) for s in splits["val"]}
    files = [layout.playlists(s) for s in ("train", "val", "test") if os.path.isfile(layout.playlists(s))]
    if not files:
        raise DataError(f"--melon {layout.root}: none of train.json, val.json, test.json is there")
    if not test:
        raise DataError(f"{splits_path}: the test split is empty")
    out, n_no_query, n_with_test, seen = [], 0, 0, set()
    for f in files:
        for pl in read_playlists(f):
            if pl["id"] in seen:
                continue
            seen.add(pl["id"])
            songs = list(dict.fromkeys(pl["songs"]))
            relevant = [s for s in songs if s in test]
            if not relevant:
                continue
            n_with_test += 1
            queries = [s for s in songs if s in known]
            if not queries:
                n_no_query += 1
                continue
            out.append((pl["id"], queries, relevant))
    return {"playlists": out, "test_ids": sorted(test), "n_no_query": n_no_query, "n_with_test": n_with_test,
            "layout": layout}


def playlist_protocol(playlists, vectors: dict[int, np.ndarray], test_ids, params: Params = Params()) -> dict:
    """nDCG@k / MAP@k of frequency-aggregated nearest test songs, beside a seeded random ranking.

    ``playlists`` = ``[(id, query song ids, relevant test song ids)]``; ``vectors`` maps song id → track
    vector (queries and candidates without one are dropped); ``test_ids`` are the candidates.
    """
    from tqdm.auto import tqdm

    k = params.k
    cands = [s for s in test_ids if s in vectors]
    if not cands:
        raise DataError("playlist task: no test song has an embedding")
    index = SimilarityIndex(cands, np.stack([vectors[s] for s in cands]), n_trees=params.n_trees, seed=params.seed)
    query_songs = sorted({q for _, qs, _ in playlists for q in qs if q in vectors})
    n_nn = min(k, len(cands))
    nn_ids = np.full((len(query_songs), n_nn), -1, dtype=np.int64)
    nn_cos = np.zeros((len(query_songs), n_nn), dtype=np.float32)
    row = {}
    for r, q in enumerate(tqdm(query_songs, desc="nearest test songs", unit="song",
                               disable=not params.progress, file=sys.stderr)):
        hits = index.query(vectors[q], n_nn)
        nn_ids[r, :len(hits)] = [h for h, _ in hits]
        nn_cos[r, :len(hits)] = [c for _, c in hits]
        row[q] = r
    rng = np.random.default_rng(params.seed)
    cand_arr = np.asarray(cands, dtype=np.int64)
    ndcg, ap, rnd_ndcg, rnd_ap, n_eval = [], [], [], [], 0
    for _, queries, relevant in playlists:
        rows = [row[q] for q in queries if q in row]
        if not rows:
            continue
        n_eval += 1
        ids, cos = nn_ids[rows].ravel(), nn_cos[rows].ravel()
        keep = ids >= 0
        count, simsum = Counter(), Counter()
        for s, c in zip(ids[keep].tolist(), cos[keep].tolist()):
            count[s] += 1
            simsum[s] += c
        ranked = sorted(count, key=lambda s: (-count[s], -simsum[s], s))[:k]
        ndcg.append(ndcg_at_k(ranked, relevant, k))
        ap.append(average_precision_at_k(ranked, relevant, k))
        random_ranked = rng.choice(cand_arr, size=min(k, len(cand_arr)), replace=False).tolist()
        rnd_ndcg.append(ndcg_at_k(random_ranked, relevant, k))
        rnd_ap.append(average_precision_at_k(random_ranked, relevant, k))
    if not n_eval:
        raise DataError("playlist task: no playlist has an embedded query song")
    return {"ndcg": float(np.mean(ndcg)), "map": float(np.mean(ap)), "k": k,
            "random": {"ndcg": float(np.mean(rnd_ndcg)), "map": float(np.mean(rnd_ap))},
            "n_playlists": n_eval, "n_test_songs": len(cands), "n_query_songs": len(query_songs)}


def evaluate_playlists(data_dir, melon_dir, model: Model, *, params: Params = Params(), cache_dir=None,
                       _keep_embeddings: dict | None = None) -> dict:
    """Read the prepared split and Melon's playlists, embed the songs involved (cached), run the protocol."""
    task = read_playlist_task(data_dir, melon_dir)
    layout = task["layout"]
    songs = sorted(set(task["test_ids"]) | {q for _, qs, _ in task["playlists"] for q in qs})
    embed = EmbeddingCache(model, cache_dir, "melon")
    paths = {s: layout.mel_path(s) for s in songs}
    emb, skipped = embed.embed_all(list(paths.values()), desc=f"{model.name} melon", progress=params.progress)
    vectors = {s: emb[p].mean(axis=0) for s, p in paths.items() if p in emb}
    result = playlist_protocol(task["playlists"], vectors, task["test_ids"], params)
    if _keep_embeddings is not None:
        _keep_embeddings["melon"] = [(vectors[s], s) for s in task["test_ids"] if s in vectors]
    return {**result, "n_with_test": task["n_with_test"], "n_no_query": task["n_no_query"],
            "skipped": skipped, "embedded": embed.misses}


# -------------------------------------------------------------------------------------------- report
def _melon_major_genres(layout: MelonLayout, items, top: int = 10):
    """Colour Melon test songs by their first major genre (the ``top`` most common, others dropped)."""
    from cmir_tf.melon import read_song_meta

    songs, _ = read_song_meta(layout.song_meta)
    labelled = [(v, songs[s].major[0]) for v, s in items if s in songs and songs[s].major]
    common = {g for g, _ in Counter(g for _, g in labelled).most_common(top)}
    return [(v, g) for v, g in labelled if g in common]


def evaluate_models(models: list[Model], *, gtzan=None, jamendo=None, playlists=None, out_dir=None,
                    params: Params = Params(), cache_dir=None, categories=JAMENDO_CATEGORIES) -> dict:
    """Every model on every dataset given: ``gtzan=(dir, splits)``, ``jamendo=(dir, splits)``,
    ``playlists=(prepared dir, melon dir)``; with ``out_dir`` the report (Tables 1–3, plots) is written."""
    if not models:
        raise ConfigError("--models: give at least one NAME=EXPORT_DIR")
    if len({m.name for m in models}) != len(models):
        raise ConfigError("--models: model names must be unique")
    if not (gtzan or jamendo or playlists):
        raise ConfigError("give at least one dataset: --gtzan/--gtzan-splits, --jamendo/--jamendo-splits "
                          "or --data/--melon")
    report = {"params": dataclasses.asdict(params), "models": {m.name: m.key for m in models}}
    maps = {}
    for m in models:
        keep = {}
        if gtzan:
            report.setdefault("gtzan", {})[m.name] = evaluate_gtzan(*gtzan, m, params=params, cache_dir=cache_dir,
                                                                    _keep_embeddings=keep)
        if jamendo:
            report.setdefault("jamendo", {})[m.name] = evaluate_jamendo(
                *jamendo, m, categories=categories, params=params, cache_dir=cache_dir)
        if playlists:
            report.setdefault("playlists", {})[m.name] = evaluate_playlists(
                *playlists, m, params=params, cache_dir=cache_dir, _keep_embeddings=keep)
        if "gtzan" in keep:
            maps[m.name] = ("GTZAN", keep["gtzan"])
        elif "melon" in keep:
            maps[m.name] = ("Melon", _melon_major_genres(MelonLayout(playlists[1]), keep["melon"]))
    if out_dir is not None:
        write_report(report, out_dir, maps)
    return report


# ------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cmir_tf.evaluate",
                                description="Downstream evaluation of exported models (paper sec. 3.3, Tables 1–3).")
    sub = p.add_subparsers(dest="task", required=True, metavar="{gtzan,jamendo,playlists,all}")

    def common(sp, gtzan=False, jamendo=False, playlists=False):
        if gtzan or jamendo:
            sp.add_argument("--runs", type=int, default=10, help="repetitions of the classifier training (default 10)")
        sp.add_argument("--seed", type=int, default=0,
                        help="base seed: classifier run r uses seed + r; also the annoy index and the random "
                             "playlist baseline (default 0)")
        sp.add_argument("--cache", default=DEFAULT_CACHE,
                        help=f"embedding cache folder, one sub-folder per model and dataset (default {DEFAULT_CACHE})")
        sp.add_argument("--no-cache", action="store_true", help="embed everything again, write no cache")
        sp.add_argument("--out", help="folder for the results (JSON, and for 'all' report.md and plots)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if gtzan:
            sp.add_argument("--gtzan-max-iter", type=int, default=200, help="GTZAN MLP epochs at most (default 200)")
        if jamendo:
            sp.add_argument("--jamendo-max-epochs", type=int, default=100,
                            help="Jamendo MLP epochs at most (default 100)")
            sp.add_argument("--patience", type=int, default=10,
                            help="Jamendo early stopping: epochs without a lower validation loss (default 10)")
        if playlists:
            sp.add_argument("--k", type=int, default=100,
                            help="playlists: neighbours per query song and prediction length (default 100)")
            sp.add_argument("--trees", type=int, default=50, help="playlists: annoy trees (default 50)")

    g = sub.add_parser("gtzan", help="GTZAN genre classification (Table 1)")
    g.add_argument("--model", required=True, help="export folder (python -m cmir_tf.export --out)")
    g.add_argument("--gtzan", required=True, help="GTZAN folder holding genres/<genre>/<genre>.000NN.wav")
    g.add_argument("--splits", required=True, help="folder with train_filtered.txt, valid_filtered.txt, test_filtered.txt")
    common(g, gtzan=True)
    j = sub.add_parser("jamendo", help="MTG-Jamendo auto-tagging (Table 2)")
    j.add_argument("--model", required=True, help="export folder (python -m cmir_tf.export --out)")
    j.add_argument("--jamendo", required=True, help="audio folder holding NN/ID.mp3 (the TSVs' PATH column)")
    j.add_argument("--splits", required=True, help="split folder, e.g. mtg-jamendo-dataset/data/splits/split-0")
    j.add_argument("--categories", default=",".join(JAMENDO_CATEGORIES),
                   help="comma-separated subset of genre,instrument,moodtheme (default all three)")
    common(j, jamendo=True)
    pl = sub.add_parser("playlists", help="Melon playlist continuation (Table 3)")
    pl.add_argument("--model", required=True, help="export folder (python -m cmir_tf.export --out)")
    pl.add_argument("--data", required=True, help="prepared folder (python -m cmir_tf.prepare), for splits.json")
    pl.add_argument("--melon", required=True, help="Melon folder: train/val/test.json and arena_mel/")
    common(pl, playlists=True)
    a = sub.add_parser("all", help="several models on the datasets given, as one report (Tables 1–3 + plots)")
    a.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR",
                   help="models to compare, e.g. contr_cf_g=exports/contr_cf_g (names as the paper's presets "
                        "get the paper's numbers beside them)")
    a.add_argument("--gtzan", help="GTZAN folder (with --gtzan-splits)")
    a.add_argument("--gtzan-splits", help="folder of the GTZAN fault-filtered split lists")
    a.add_argument("--jamendo", help="MTG-Jamendo audio folder (with --jamendo-splits)")
    a.add_argument("--jamendo-splits", help="MTG-Jamendo split folder, e.g. data/splits/split-0")
    a.add_argument("--categories", default=",".join(JAMENDO_CATEGORIES), help="Jamendo categories (default all)")
    a.add_argument("--data", help="prepared folder (with --melon) for the playlist task")
    a.add_argument("--melon", help="Melon folder (with --data)")
    common(a, gtzan=True, jamendo=True, playlists=True)
    return p


def _pair(args, a, b, flag_a, flag_b):
    x, y = getattr(args, a, None), getattr(args, b, None)
    if (x is None) != (y is None):
        raise ConfigError(f"{flag_a} and {flag_b} go together")
    return (x, y) if x is not None else None


def run(args) -> dict:
    """Run the parsed command; returns the results (also written under ``--out`` when given)."""
    d = Params()
    params = Params(runs=getattr(args, "runs", d.runs), seed=args.seed,
                    gtzan_max_iter=getattr(args, "gtzan_max_iter", d.gtzan_max_iter),
                    jamendo_max_epochs=getattr(args, "jamendo_max_epochs", d.jamendo_max_epochs),
                    jamendo_patience=getattr(args, "patience", d.jamendo_patience),
                    k=getattr(args, "k", d.k), n_trees=getattr(args, "trees", d.n_trees), progress=not args.quiet)
    for flag, value in (("--runs", params.runs), ("--gtzan-max-iter", params.gtzan_max_iter),
                        ("--jamendo-max-epochs", params.jamendo_max_epochs), ("--k", params.k),
                        ("--trees", params.n_trees)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    cache = None if args.no_cache else args.cache
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if hasattr(args, "categories") else None
    if args.task == "all":
        models = []
        for spec in args.models:
            name, sep, d = spec.partition("=")
            if not sep or not name or not d:
                raise ConfigError(f"--models: expected NAME=EXPORT_DIR, got {spec!r}")
            models.append(load_model(name, d))
        return evaluate_models(models, gtzan=_pair(args, "gtzan", "gtzan_splits", "--gtzan", "--gtzan-splits"),
                               jamendo=_pair(args, "jamendo", "jamendo_splits", "--jamendo", "--jamendo-splits"),
                               playlists=_pair(args, "data", "melon", "--data", "--melon"),
                               out_dir=args.out, params=params, cache_dir=cache, categories=cats)
    model = load_model(Path(args.model).name or "model", args.model)
    if args.task == "gtzan":
        result = evaluate_gtzan(args.gtzan, args.splits, model, params=params, cache_dir=cache)
    elif args.task == "jamendo":
        result = evaluate_jamendo(args.jamendo, args.splits, model, categories=cats, params=params, cache_dir=cache)
    else:
        result = evaluate_playlists(args.data, args.melon, model, params=params, cache_dir=cache)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out) / f"{args.task}.json", {"model": args.model, "params": dataclasses.asdict(params),
                                                          "result": result}, indent=1)
    return result


def _print_summary(task: str, result: dict) -> None:
    if task == "gtzan":
        print(f"GTZAN accuracy: {mean_std(result, 2)} % over {len(result['runs'])} runs, {result['n_test_tracks']} test tracks")
    elif task == "jamendo":
        for cat, r in result.items():
            if isinstance(r, dict):
                print(f"MTG-Jamendo {cat}: macro ROC-AUC {mean_std(r, 3)} ({r['n_tags_evaluated']}/{r['n_tags']} tags)")
    elif task == "playlists":
        print(f"playlists: nDCG@{result['k']} {result['ndcg']:.4f}, MAP@{result['k']} {result['map']:.4f} "
              f"(random {result['random']['ndcg']:.4f} / {result['random']['map']:.4f}) "
              f"over {result['n_playlists']} playlists")
    else:
        print(markdown(result), end="")


def main(argv=None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (DataError, ConfigError) as e:
        parser.exit(2, f"error: {e}\n")
    _print_summary(args.task, result)


if __name__ == "__main__":
    main()
