"""GTZAN genre classification (paper Table 1): the fault-filtered split, a patch MLP, a per-track vote.

Layout read (:func:`read_gtzan`):

- audio ``GTZAN/genres/<genre>/<genre>.000NN.wav`` (the folder holding ``blues/``, ``classical/``, …
  directly is accepted too), ten genres (:data:`GTZAN_GENRES`);
- the fault-filtered split of Kereliuk & Sturm: a folder holding ``train_filtered.txt`` (443 tracks),
  ``valid_filtered.txt`` (197) and ``test_filtered.txt`` (290), one ``blues/blues.00000.wav`` per line.
  The valid list may be absent; it is read but not used for training (the paper trains on the 443 and
  tests on the 290).

Protocol (:func:`gtzan_protocol`): every patch embedding of a training track is an instance of its
genre; scikit-learn's ``MLPClassifier`` with one hidden layer of ``Params.gtzan_hidden`` (256) ReLU,
at most ``gtzan_max_iter`` epochs, inputs standardised on the training set, run ``r`` seeded
``seed + r``, predicts each test patch; a track takes the majority vote of its patches (a tie goes to
the tied genre with the highest mean probability). Result: mean ± population std of the test accuracy
(%) over ``Params.runs`` runs, with the track and instance counts.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cmir_tf.errors import DataError
from cmir_tf.evaluate.cache import EmbeddingCache, Model
from cmir_tf.evaluate.downstream import Params, read_lines, require_dir, require_files, summary
from cmir_tf.fileio import inside

__all__ = ["GTZAN_GENRES", "GTZAN_LISTS", "read_gtzan", "gtzan_protocol", "evaluate_gtzan", "evaluate_gtzan_split"]

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_LISTS = {"train": "train_filtered.txt", "valid": "valid_filtered.txt", "test": "test_filtered.txt"}


def read_gtzan(gtzan_dir, splits_dir) -> dict[str, list[tuple[Path, str]]]:
    """The fault-filtered split → ``{"train"|"valid"|"test": [(wav path, genre)]}`` (valid may be empty)."""
    root = require_dir(gtzan_dir, "GTZAN folder")
    splits = require_dir(splits_dir, "GTZAN split folder")
    audio = root / "genres" if (root / "genres").is_dir() else root
    out = {}
    for split, name in GTZAN_LISTS.items():
        f = splits / name
        if not f.is_file():
            if split == "valid":
                out[split] = []
                continue
            raise DataError(f"{f}: GTZAN split list is missing (expected {', '.join(GTZAN_LISTS.values())})")
        out[split] = _read_list(f, audio)
    return out


def _read_list(f: Path, audio: Path) -> list[tuple[Path, str]]:
    items = []
    for n, line in read_lines(f, "GTZAN split list"):
        rel = line.strip()
        if not rel:
            continue
        inside(audio, rel, f"{f}:{n}")
        parts = rel.replace("\\", "/").split("/")
        if len(parts) != 2 or not parts[1].startswith(parts[0] + "."):
            raise DataError(f"{f}:{n}: expected a line like blues/blues.00000.wav, got {rel!r}")
        if parts[0] not in GTZAN_GENRES:
            raise DataError(f"{f}:{n}: genre folder {parts[0]!r} is not one of the 10 GTZAN genres "
                            f"({', '.join(GTZAN_GENRES)})")
        items.append((audio / parts[0] / parts[1], parts[0]))
    if not items:
        raise DataError(f"{f}: GTZAN split list is empty")
    require_files([p for p, _ in items], f"GTZAN files listed in {f} are")
    return items


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
        correct = sum(_vote(clf, px) == g for px, g in zip(test_x, truth))
        accuracies.append(100.0 * correct / len(test))
    return {**summary(accuracies), "n_train_tracks": len(train), "n_test_tracks": len(test),
            "n_train_instances": int(len(y))}


def _vote(clf, patches: np.ndarray):
    """The track's genre: majority of its patches, a tie to the tied genre of highest mean probability."""
    proba = clf.predict_proba(patches)
    votes = np.bincount(proba.argmax(axis=1), minlength=len(clf.classes_))
    tied = np.flatnonzero(votes == votes.max())
    return clf.classes_[tied[np.argmax(proba.mean(axis=0)[tied])]]


def evaluate_gtzan(gtzan_dir, splits_dir, model: Model, *, params: Params = Params(),
                   cache_dir=None, keep_embeddings: dict | None = None) -> dict:
    """Read the GTZAN layout (:func:`read_gtzan`), then :func:`evaluate_gtzan_split`."""
    return evaluate_gtzan_split(read_gtzan(gtzan_dir, splits_dir), model, params=params, cache_dir=cache_dir,
                                keep_embeddings=keep_embeddings)


def evaluate_gtzan_split(split: dict, model: Model, *, params: Params = Params(), cache_dir=None,
                         keep_embeddings: dict | None = None) -> dict:
    """Embed a :func:`read_gtzan` split with ``model`` (cached) and run :func:`gtzan_protocol`.

    Unreadable files are left out and listed in ``skipped``. With ``keep_embeddings`` (a dict),
    ``keep_embeddings["gtzan"]`` receives the test tracks as ``[(mean embedding (D,), genre)]`` (the
    report's embedding map).
    """
    embed = EmbeddingCache(model, cache_dir, "gtzan")
    paths = [p for s in ("train", "test") for p, _ in split[s]]
    emb, skipped = embed.embed_all(paths, desc=f"{model.name} gtzan", progress=params.progress)
    train = [(emb[p], g) for p, g in split["train"] if p in emb]
    test = [(emb[p], g) for p, g in split["test"] if p in emb]
    if not train or not test:
        raise DataError(f"GTZAN: no readable {'training' if not train else 'test'} track "
                        f"({len(skipped)} of {len(paths)} files unreadable)")
    if keep_embeddings is not None:
        keep_embeddings["gtzan"] = [(e.mean(axis=0), g) for e, g in test]
    return {**gtzan_protocol(train, test, params), "skipped": skipped, "embedded": embed.misses}
