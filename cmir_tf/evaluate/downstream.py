"""What the downstream protocols (``gtzan``, ``jamendo``, ``playlists``) share: their settings and checks.

- :class:`Params` — every protocol setting in one dataclass (the CLI fills it from its flags; the report
  records it as ``params``).
- :func:`require_dir` / :func:`require_files` — a dataset folder or the files a split lists must exist;
  the message names the folder or the files (up to five), never a command-line flag.
- :func:`read_lines` — a dataset's text file (split list, TSV) as numbered lines: UTF-8 (a leading
  byte-order mark dropped), LF, CRLF or CR line ends in any mix; bytes that are not UTF-8 are refused
  with the file and the line named.
- :func:`summary` — ``{"mean", "std", "runs"}`` over repeated classifier runs (numpy's population std).

This module sits below the protocols and imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmir_tf.errors import ConfigError, DataError
from cmir_tf.fileio import why_not_a_file

__all__ = ["Params", "require_dir", "require_files", "read_lines", "summary"]


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
    missing = [(str(p), why) for p in paths if (why := why_not_a_file(p)) is not None]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        shown = ", ".join(p if why == "missing" else f"{p} ({why})" for p, why in missing[:5])
        raise DataError(f"{len(missing)} {what} missing or not files: {shown}{more}")


def read_lines(path, what: str) -> list[tuple[int, str]]:
    """``[(line number from 1, text without its line end)]`` of a text file; any fault → ``DataError``
    naming the file (and the line): missing, a folder, unreadable, not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} is missing") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} is a folder, not a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = []
    for n, raw in enumerate(data.splitlines(), 1):  # bytes: splits on LF, CRLF and CR only
        try:
            lines.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{n}: {what} is not UTF-8 text (byte {e.start + 1} of the line is "
                            f"0x{raw[e.start]:02x})") from None
    return lines


def summary(values) -> dict:
    """Mean, population std and the values themselves (as floats) of repeated runs."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": values}
