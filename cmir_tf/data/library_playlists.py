"""A music library's playlists: M3U / M3U8 files (extended M3U too) read into lists of library files.

Lines starting with ``#`` (``#EXTM3U``, ``#EXTINF``…) and blank lines are ignored; every other line is an
entry. Entries are read as UTF-8, and bytes that are not UTF-8 are kept as they are (so they name
the file the file system holds under those bytes: an ``.m3u`` written in Latin-1 names Latin-1 file
names). An entry is resolved as follows:

* a URL (``http://…``, any ``scheme://`` except ``file://``) → skipped, counted as ``url``;
* ``file://`` URIs are turned into their path; backslashes (playlists written on Windows) into ``/``;
* a relative path is taken from the playlist's own folder; an absolute one must lie inside the library;
* a path outside the library (``../../x.mp3``, ``/elsewhere/x.mp3``) → skipped as ``outside``;
* a path inside that is not a prepared audio file of the library → skipped as ``missing``.

A playlist's repeated entries count once. Nothing is opened but the playlist file itself.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from urllib.parse import unquote, urlparse

PLAYLIST_EXTENSIONS = (".m3u", ".m3u8")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
MAX_PLAYLIST_BYTES = 64 << 20  # a bigger "playlist" is not one


def _lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        raw = f.read(MAX_PLAYLIST_BYTES + 1)
    if len(raw) > MAX_PLAYLIST_BYTES:
        raise OSError(f"larger than {MAX_PLAYLIST_BYTES >> 20} MB")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    # bytes as the file system has them: an entry naming a file whose name is not UTF-8 still matches
    text = raw.decode("utf-8", "surrogateescape")
    return [ln.strip() for ln in text.splitlines()]


def _resolve(entry: str, folder: str, root: str) -> tuple[str | None, str | None]:
    """``(path relative to root, None)`` or ``(None, reason)``."""
    if entry.lower().startswith("file://"):
        entry = unquote(urlparse(entry).path)
    elif _URL.match(entry):
        return None, "url"
    entry = entry.replace("\\", "/")
    full = os.path.normpath(entry if os.path.isabs(entry) else os.path.join(folder, entry))
    rel = os.path.relpath(full, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return None, "outside"
    return rel, None


def read_playlist(path: str, root: str, known: set) -> tuple[list[str], Counter]:
    """One playlist → (its library files, relative to ``root``, in order, each once; skipped entries by
    reason). ``known``: the library's audio files (relative paths). A playlist that cannot be read →
    ``OSError``."""
    folder = os.path.dirname(path)
    out, skipped = [], Counter()
    for line in _lines(path):
        if not line or line.startswith("#"):
            continue
        rel, reason = _resolve(line, folder, root)
        if rel is not None and rel not in known:
            reason = "missing"
        if reason:
            skipped[reason] += 1
        else:
            out.append(rel)
    return list(dict.fromkeys(out)), skipped


def read_playlists(paths, root: str, known: set, log=print,
                   names: list | None = None) -> tuple[list[list[str]], dict]:
    """Every playlist file → (non-empty playlists, stats ``{"files", "unreadable", "entries_skipped":
    {reason: n}}``). An unreadable playlist is logged (one line) and counted. ``names``, a list, receives
    each kept playlist's file path relative to ``root``."""
    playlists, skipped, unreadable = [], Counter(), 0
    for path in paths:
        try:
            songs, why = read_playlist(path, root, known)
        except OSError as e:
            log(f"{os.fsencode(path).decode('utf-8', 'backslashreplace')}: playlist skipped "
                f"({e.strerror or e})")
            unreadable += 1
            continue
        skipped.update(why)
        if songs:
            playlists.append(songs)
            if names is not None:
                names.append(os.path.relpath(path, root))
    return playlists, {"files": len(paths), "unreadable": unreadable, "entries_skipped": dict(sorted(skipped.items()))}
