"""What the downstream protocols (``gtzan``, ``jamendo``, ``playlists``) share: their settings and checks.

- :class:`Params` — every protocol setting in one dataclass (the CLI fills it from its flags; the report
  records it as ``params``).
- :func:`require_dir` / :func:`require_files` — a dataset folder or the files a split lists must exist;
  the message names the folder or the files (up to five), never a command-line flag.
- :func:`summary` — ``{"mean", "std", "runs"}`` over repeated classifier runs (numpy's population std).

This module sits below the protocols and imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmir_tf.errors import ConfigError, DataError

__all__ = ["Params", "require_dir", "require_files", "summary"]


@dataclass
class Params:
    """Protocol settings; the defaults are the paper's (sizes) or common choices (optimiser details).

    ``runs`` classifier trainings per task, run ``r`` seeded with ``seed + r`` (``seed`` also seeds the
    annoy index and the random playlist baseline); ``gtzan_*`` the scikit-learn MLP; ``jamendo_*`` the
    Keras tagging MLP; ``k`` neighbours per query song and prediction length, ``n_trees`` annoy trees.
    """

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


def require_dir(path, what: str) -> Path:
    """``path`` as a :class:`Path` if it is a folder; else ``ConfigError`` (not given) / ``DataError``."""
    if path is None:
        raise ConfigError(f"the {what} is required")
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: {what} does not exist")
    return p


def require_files(paths, what: str) -> None:
    """Raise one ``DataError`` naming the missing ones among ``paths`` (``what``: "GTZAN files … are")."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"{len(missing)} {what} missing: {', '.join(missing[:5])}{more}")


def summary(values) -> dict:
    """Mean, population std and the values themselves (as floats) of repeated runs."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": values}
