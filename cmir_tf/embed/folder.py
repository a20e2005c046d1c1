"""Embed many inputs into a folder (``python -m cmir_tf.embed``): per-patch embeddings and the track mean.

    python -m cmir_tf.embed --model export/contr_cf_g song.mp3 more/ arena_mel/12/12345.npy --out emb/

Each input goes through :class:`cmir_tf.embed.embedder.Embedder` (non-overlapping 256-frame patches of
its mel, batched across tracks, through the export's ``serving_default``). For each input it writes

    OUT/<id>.npy        float32 (P, 128): the patch embeddings, in time order
    OUT/<id>.mean.npy   float32 (128,):  their mean (the track vector; `cmir_tf.similar.index` reads it)

where <id> is the input's file name without its extension for a file given on the command line, and
its path relative to the folder (without extension) for files found in a folder given on the command
line (`arena_mel/` → `12/12345`). Folders are searched for the extensions of :func:`input_extensions`:
Melon mel `.npy` and every audio format libsndfile decodes (`.wav .mp3 .flac .ogg .opus .oga .aif .aiff
.caf .w64 …`, the list `cmir_tf.audio.decoding.audio_extensions()` reads from libsndfile). Other files
in a folder (and `.mean.npy` track means) are ignored, and counted in the closing line. File names need not be UTF-8: outputs keep the input's bytes.

Only embed's own outputs are ever replaced: it records each file it writes in `OUT/.cmir-embed-outputs`,
and refuses (exit 2, naming the file) before any work when an output would replace a file it did not
write (a user's file, or an input inside OUT); two inputs whose outputs would share a name (`x.npy` and
`x.mean.npy` given side by side) are refused naming both. A file that cannot be read — missing, not audio, truncated, damaged — is one `error: <path>:
<reason>` line on stderr and is skipped; the exit status is 1 if any input failed, 2 on a bad flag or
model folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np

from cmir_tf.audio import decoding as audio
from cmir_tf.embed.embedder import DEFAULT_BATCH_SIZE, MEL_EXTENSIONS, Embedder
from cmir_tf.errors import ConfigError
from cmir_tf.fileio import remove_stale_temps, require_output_dir, save_npy

__all__ = ["OUTPUT_SUFFIXES", "MANIFEST", "input_extensions", "collect_inputs", "embed_to_folder"]

OUTPUT_SUFFIXES = (".npy", ".mean.npy")  # OUT/<id>.npy (patch embeddings), OUT/<id>.mean.npy (track mean)
MANIFEST = ".cmir-embed-outputs"  # OUT/MANIFEST: one JSON string per line, each output file embed wrote


def input_extensions() -> tuple[str, ...]:
    """Extensions collected from folders: Melon mel ``.npy`` and every audio format libsndfile decodes."""
    return MEL_EXTENSIONS + audio.audio_extensions()


def collect_inputs(inputs, ignored=None):
    """Command-line INPUTS (files or folders) → [(path, output id)]; folders are walked recursively.

    Files in a walked folder that are neither mel ``.npy`` nor audio (:func:`input_extensions`), and
    ``.mean.npy`` files (embed's own track means), are appended to the list ``ignored``. Two inputs whose
    outputs would share a file name (``x.npy`` and ``x.mean.npy`` given side by side, or the same id
    twice) → ``ConfigError`` naming both."""
    exts = input_extensions()
    found = []
    for arg in inputs:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if os.path.splitext(f)[1].lower() not in exts or f.endswith(".mean.npy"):
                        if ignored is not None:
                            ignored.append(full)
                        continue
                    rel = os.path.relpath(full, arg)
                    found.append((full, os.path.splitext(rel)[0].replace(os.sep, "/")))
        else:  # a missing file is reported per file later, like any unreadable one
            found.append((arg, os.path.splitext(os.path.basename(arg))[0]))
    _refuse_colliding_outputs(found)
    return found


def _refuse_colliding_outputs(found):
    owner = {}  # output name → input path
    for k, (path, ident) in enumerate(found):
        for suffix in OUTPUT_SUFFIXES:
            name = ident + suffix
            if name in owner:
                raise ConfigError(f"INPUTS: {owner[name]} and {path} would both be written to {name} (output "
                                  "names collide); pass their folder instead of the files, or embed them into "
                                  "separate --out folders")
        owner.update((ident + suffix, path) for suffix in OUTPUT_SUFFIXES)


def _recorded_outputs(out_dir) -> set:
    """Output files (relative names) that embed recorded writing into OUT_DIR."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.lexists(path):
        return set()
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: embed's record of its outputs is not a file; move it away")
    names = set()
    with open(path, "rb") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                name = json.loads(line)
                if isinstance(name, str):
                    names.add(name)
    return names


def _refuse_foreign_outputs(items, out_dir) -> set:
    """Refuse (``ConfigError``) before any work to overwrite a file in OUT_DIR that embed did not write;
    returns the outputs recorded so far."""
    recorded = _recorded_outputs(out_dir)
    for path, ident in items:
        for suffix in OUTPUT_SUFFIXES:
            rel = ident + suffix
            target = os.path.join(out_dir, *rel.split("/"))
            if os.path.isdir(target):
                raise ConfigError(f"{target}: is a folder, where the output of {path} goes")
            if os.path.lexists(target) and rel not in recorded:
                raise ConfigError(f"{target}: exists and was not written by embed (the output of {path}); "
                                  "refusing to overwrite it: move it away or choose another --out")
    return recorded


def _record_output(out_dir, rel) -> None:
    """Append REL to OUT_DIR's manifest (before the file is written: a kill in between leaves no
    unrecorded output that a rerun would refuse to overwrite)."""
    fd = os.open(os.path.join(out_dir, MANIFEST), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(rel) + "\n").encode("ascii"))
    finally:
        os.close(fd)


def embed_to_folder(model_dir, inputs, out_dir, batch_size=DEFAULT_BATCH_SIZE, progress=True, log=None,
                    ignored=None, published_frontend=False):
    """Embed INPUTS into OUT_DIR (see the module doc); returns (number written, [(path, error)]).
    PUBLISHED_FRONTEND: `cmir_tf.embed.published.PublishedEmbedder` (the published encode.py's choices).

    Files of walked folders that are not inputs are appended to the list ``ignored``. A file in OUT_DIR
    that an output would replace and that embed did not write (its manifest, :data:`MANIFEST`) is
    refused before any work."""
    from tqdm import tqdm

    log = log or sys.stderr
    items = collect_inputs(inputs, ignored)
    if not items:
        raise ConfigError("INPUTS: no audio or .npy files given")
    require_output_dir(out_dir, "output folder")
    recorded = _refuse_foreign_outputs(items, out_dir)
    remove_stale_temps(out_dir)
    make = Embedder
    if published_frontend:
        from cmir_tf.embed.published import PublishedEmbedder as make
    embedder = make(model_dir, batch_size)
    out_of = dict(items)
    written, failed = 0, []
    bar = tqdm(total=len(items), unit="file", disable=not progress, file=log)
    try:
        for path, patches, mean, err in embedder.embed_files([p for p, _ in items]):
            bar.update(1)
            if err is not None:
                msg = str(err) if path in str(err) else f"{path}: {err}"
                bar.write(f"error: {msg}", file=log)
                failed.append((path, err))
                continue
            for suffix, arr in zip(OUTPUT_SUFFIXES, (patches, mean)):
                if out_of[path] + suffix not in recorded:
                    _record_output(out_dir, out_of[path] + suffix)
                save_npy(os.path.join(out_dir, *(out_of[path] + suffix).split("/")), np.asarray(arr, np.float32))
            written += 1
    finally:
        bar.close()
    return written, failed
