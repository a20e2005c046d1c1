"""A music library's tags: what each audio file says about itself (mutagen), a sidecar's overrides,
and the normalisation of genre strings into a vocabulary.

**Reading** (:func:`read_tags`): mutagen's "easy" interface, the same keys for ID3 (mp3), Vorbis
comments (Ogg Vorbis/Opus, FLAC) and MP4 atoms: ``genre``, ``artist``, ``albumartist``, ``album``,
``title``. A file whose tags mutagen cannot parse (damaged, not UTF-8 where the format says UTF-8,
absurd frame sizes: mutagen raises) gets no tags and the reason ``bad_tags``; its audio is still used.

**Multi-valued fields.** Every value of a repeated field counts (``GENRE=Rock`` twice in a Vorbis
comment, several ID3 ``TCON`` strings). Genre values are then split on ``;``, ``/`` and ``,``
(:data:`GENRE_SEPARATORS`) — so ``Rock/Pop`` is two genres while ``Drum & Bass`` and ``R&B`` (no
separator) stay one; artist values are split on ``;`` only (``Earth, Wind & Fire`` and ``AC/DC`` are
single artists). ID3v1 numeric genres (``(17)``) are turned into their names by mutagen.

**Junk** (:func:`clean`): values real files carry in place of nothing — empty strings, ``<Unknown>``,
``Unknown``, ``(None)``, ``None``, ``N/A``, ``-``, ``?``, ``Unknown Artist``, ``Unknown Album``,
``Unknown Genre`` (any case) — count as missing.

**Normalisation** (:func:`genre_code`): NFKC, whitespace collapsed, case folded: ``" Hip  Hop"`` and
``"hip hop"`` are one genre; the vocabulary shows the most frequent spelling.

**Sidecar** (:func:`read_sidecar`): a CSV (``,``) or TSV (tab; told by the ``.tsv`` suffix or a tab in
the header line) with a header naming ``path`` and any of ``genres``, ``artists``, ``album``,
``title``; ``path`` is relative to the library folder. A non-empty cell replaces the file's own
value (genres split as above, artists on ``;``); an empty cell keeps it.
"""
from __future__ import annotations

import csv
import io
import os
import re
import unicodedata

from cmir_tf.errors import DataError

GENRE_SEPARATORS = (";", "/", ",")
ARTIST_SEPARATORS = (";",)
JUNK = frozenset({"", "unknown", "<unknown>", "(unknown)", "[unknown]", "none", "(none)", "<none>", "n/a", "-",
                  "?", "unknown artist", "unknown album", "unknown genre", "null"})
FIELDS = ("genres", "artists", "album", "title")
_SPACES = re.compile(r"\s+")
MAX_VALUE_CHARS = 200  # longer tag values (a huge frame) are cut: no genre or artist name is that long


def clean(value) -> str | None:
    """A tag value as a trimmed string, or None when it is junk (module docstring)."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", str(value))).strip()[:MAX_VALUE_CHARS].strip()
    return None if text.casefold() in JUNK else text


def split_values(values, separators) -> list[str]:
    """Every value split on ``separators``, cleaned, junk dropped, repeats removed (first order kept)."""
    out = []
    for v in values:
        parts = [str(v)]
        for sep in separators:
            parts = [q for p in parts for q in p.split(sep)]
        out.extend(c for c in map(clean, parts) if c)
    return list(dict.fromkeys(out))


def genre_code(name: str) -> str:
    """The vocabulary key of a (cleaned) genre name: case folded."""
    return name.casefold()


def _first(values) -> str | None:
    for v in values:
        c = clean(v)
        if c:
            return c
    return None


def read_tags(path) -> tuple[dict, str | None]:
    """``({"genres", "artists", "album", "title"}, problem)`` of one audio file; ``problem`` is None or
    ``"bad_tags: <why>"`` (then the tags are empty). Never raises for a bad file."""
    empty = {"genres": [], "artists": [], "album": None, "title": None}
    try:
        import mutagen

        f = mutagen.File(path, easy=True)
        tags = dict(f.tags or {}) if f is not None else {}
    except Exception as e:  # noqa: BLE001 — mutagen raises many types on damaged tags
        why = str(e).strip()[:120]
        return empty, f"bad_tags: {type(e).__name__}" + (f": {why}" if why else "")
    get = lambda k: [v for v in (tags.get(k) or []) if isinstance(v, str)]  # noqa: E731
    return {"genres": split_values(get("genre"), GENRE_SEPARATORS),
            "artists": split_values(get("artist") or get("albumartist"), ARTIST_SEPARATORS),
            "album": _first(get("album")), "title": _first(get("title"))}, None


def read_sidecar(path, root) -> dict:
    """``{path relative to root: {field: value}}`` from a CSV/TSV sidecar (module docstring); a file that
    cannot be read or has no ``path`` column → ``DataError`` naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the tags sidecar ({getattr(e, 'strerror', None) or e})") from None
    header = text.split("\n", 1)[0]
    delimiter = "\t" if str(path).lower().endswith(".tsv") or "\t" in header else ","
    rows = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    names = [n.strip().lower() for n in (rows.fieldnames or [])]
    if "path" not in names:
        raise DataError(f"{path}: the tags sidecar needs a 'path' column (found: {', '.join(names) or 'none'})")
    rows.fieldnames = names
    out = {}
    for row in rows:
        rel = os.path.normpath((row.get("path") or "").strip())
        if not rel or rel == ".":
            continue
        entry = {}
        if (row.get("genres") or "").strip():
            entry["genres"] = split_values([row["genres"]], GENRE_SEPARATORS)
        if (row.get("artists") or "").strip():
            entry["artists"] = split_values([row["artists"]], ARTIST_SEPARATORS)
        for key in ("album", "title"):
            if clean(row.get(key) or ""):
                entry[key] = clean(row[key])
        out[rel] = entry
    return out
