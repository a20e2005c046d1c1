"""Embed audio files or Melon mels with an exported model: per-patch embeddings and the track mean.

    python -m cmir_tf.embed --model export/contr_cf_g song.mp3 more/ arena_mel/12/12345.npy --out emb/

A track's mel (Melon's front end, `cmir_tf.frontend`) is cut into non-overlapping 256-frame patches
(the incomplete tail is dropped; a track shorter than one patch gives one patch padded with −200 dB,
as `frontend.patches` and the SavedModel's `embed_waveform` do); each patch goes through the exported
`serving_default` signature, in batches that span tracks. For each input the CLI writes

    OUT/<id>.npy        float32 (P, 128): the patch embeddings, in time order
    OUT/<id>.mean.npy   float32 (128,):  their mean (the track vector; `cmir_tf.similar` reads it)

where <id> is the input's file name without its extension for a file given on the command line, and
its path relative to the folder (without extension) for files found in a folder given on the command
line (`arena_mel/` → `12/12345`). Inputs: audio `.wav .mp3 .flac .ogg` (decoded and resampled to 16 kHz
mono by `cmir_tf.audio`: libsndfile and libsoxr, see docs/AUDIO.md) or Melon mel `.npy` (48 × frames,
dB). A file that cannot be read — missing, not audio, truncated, damaged — is one `error: <path>:
<reason>` line on stderr and is skipped; the exit status is 1 if any input failed, 2 on a bad flag or
model folder. Files are read in two threads while the model runs; the results do not depend on it.
"""
import argparse
import collections
import concurrent.futures
import os
import sys

import numpy as np
import tensorflow as tf

from cmir_tf import audio, cli
from cmir_tf import constants as C
from cmir_tf import frontend
from cmir_tf.errors import EXIT_PARTIAL, CmirError, ConfigError, DataError, ExportError
from cmir_tf.exportdir import find_saved_model
from cmir_tf.fileio import remove_stale_temps, require_output_dir, save_npy

DEFAULT_BATCH_SIZE = 64
# Reading threads of embed_files: decoding an ogg/mp3 costs about a quarter of the model's CPU time per
# patch, so one thread could keep up; two keep the model fed while a long file decodes (docs/AUDIO.md).
READ_WORKERS = 2
PREFETCH_FILES = 8  # files read ahead of the model
MEL_EXTENSIONS = (".npy",)


def mel_patches(mel):
    """(n_frames, 48) mel → (P, 256, 48) non-overlapping patches, P = max(1, n_frames // 256)."""
    return np.asarray(frontend.patches(np.asarray(mel, np.float32)), np.float32)


class Embedder:
    """An exported model (found by `exportdir.find_saved_model`) turned into a track embedder.

    `embed_mel(mel)` and `embed_file(path)` return `(patches (P, D), mean (D,))`; `embed_files(paths)`
    batches patches across files. `batch_size` patches go through the model at a time.
    """

    def __init__(self, model_dir, batch_size=DEFAULT_BATCH_SIZE):
        if int(batch_size) < 1:
            raise ConfigError(f"batch size: must be ≥ 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.path = find_saved_model(model_dir)
        try:
            self._model = tf.saved_model.load(self.path)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise ExportError(f"{self.path}: cannot load the SavedModel ({e})") from None
        sig = self._model.signatures.get("serving_default")
        if sig is None or "melspectrogram" not in sig.structured_input_signature[1]:
            raise ExportError(f"{self.path}: no serving_default(melspectrogram) signature")
        self._serve = sig
        self.dim = int(sig.structured_outputs["embeddings"].shape[-1])
        self._mel = tf.function(frontend.melspectrogram, input_signature=[tf.TensorSpec([None], tf.float32)])

    # --------------------------------------------------------------------------------- patches
    def embed_patches(self, patches):
        """(P, 256, 48) float32 → (P, D) embeddings, `batch_size` patches per model call."""
        patches = np.asarray(patches, np.float32)
        out = [self._serve(melspectrogram=tf.constant(patches[i:i + self.batch_size]))["embeddings"].numpy()
               for i in range(0, len(patches), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.dim), np.float32)

    def embed_mel(self, mel):
        """(n_frames, 48) dB mel, time-major → (patch embeddings (P, D), mean (D,))."""
        mel = _check_mel(mel, "mel")
        emb = self.embed_patches(mel_patches(mel))
        return emb, emb.mean(axis=0)

    def mel(self, waveform):
        """16 kHz mono float32 waveform → its (n_frames, 48) mel (`frontend.melspectrogram`)."""
        return self._mel(tf.constant(np.asarray(waveform, np.float32))).numpy()

    # ----------------------------------------------------------------------------------- files
    def load_mel(self, path):
        """An input file → its (n_frames, 48) mel: Melon `.npy` as stored, audio through the front end."""
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext in MEL_EXTENSIONS:
            from cmir_tf import melon

            return melon.load_mel(path)
        if ext in audio.AUDIO_EXTENSIONS:
            return self.mel(audio.load_audio(path))  # never empty: an empty stream is a DataError
        raise DataError(f"{path}: unsupported file type {ext or '(none)'!r}; expected audio "
                        f"({' '.join(audio.AUDIO_EXTENSIONS)}) or a Melon mel .npy")

    def embed_file(self, path):
        """Audio file or Melon mel `.npy` → (patch embeddings (P, D), mean (D,))."""
        return self.embed_mel(self.load_mel(path))

    def load_patches(self, path):
        """An input file → its checked (P, 256, 48) patches (what `embed_files`' reading threads do)."""
        return mel_patches(_check_mel(self.load_mel(path), path))

    def embed_files(self, paths, workers=None, prefetch=None):
        """Yield `(path, patches (P, D), mean (D,), None)` or `(path, None, None, error)` per input, in order.

        `workers` threads (default READ_WORKERS) read the files up to `prefetch` ahead (default
        PREFETCH_FILES) — decode, resample, mel, patches — while this thread runs the model on
        `batch_size` patches at a time regardless of track boundaries. The results do not depend on the
        number of threads (`cmir_tf.audio` is thread-safe; tested bit for bit with 1, 2 and 4).
        """
        paths = list(paths)
        workers = max(1, int(READ_WORKERS if workers is None else workers))
        prefetch = max(1, int(PREFETCH_FILES if prefetch is None else prefetch))
        st = {"queue": [], "queued": 0, "out": np.zeros((0, self.dim), np.float32), "base": 0, "total": 0}
        tracks = collections.deque()  # (path, first patch, end patch) in global patch numbering

        def advance(flush):
            """Run full batches (all that is queued if FLUSH); return the tracks now complete."""
            n = st["queued"] if flush else st["queued"] - st["queued"] % self.batch_size
            if n:
                flat = st["queue"][0] if len(st["queue"]) == 1 else np.concatenate(st["queue"], axis=0)
                st["out"] = np.concatenate([st["out"], self.embed_patches(flat[:n])], axis=0)
                st["queue"], st["queued"] = ([flat[n:]] if len(flat) > n else []), len(flat) - n
            ready = []
            while tracks and tracks[0][2] <= st["base"] + len(st["out"]):
                path, start, end = tracks.popleft()
                emb = st["out"][start - st["base"]:end - st["base"]]
                ready.append((path, emb, emb.mean(axis=0), None))
            keep = tracks[0][1] if tracks else st["base"] + len(st["out"])
            st["out"], st["base"] = st["out"][keep - st["base"]:], keep
            return ready

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cmir-read") as pool:
            pending = collections.deque()
            todo = iter(paths)
            for path in todo:
                pending.append((path, pool.submit(self.load_patches, path)))
                if len(pending) >= prefetch:
                    break
            while pending:
                path, fut = pending.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.load_patches, nxt)))
                try:
                    p = fut.result()
                except (CmirError, OSError, ValueError, tf.errors.OpError) as e:
                    yield from advance(flush=True)  # earlier inputs first: results stay in input order
                    yield path, None, None, e
                    continue
                st["queue"].append(p)
                st["queued"] += len(p)
                tracks.append((path, st["total"], st["total"] + len(p)))
                st["total"] += len(p)
                yield from advance(flush=False)
            yield from advance(flush=True)


def _check_mel(mel, where):
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != C.N_BANDS:
        raise DataError(f"{where}: mel has shape {mel.shape}, expected (n_frames, {C.N_BANDS}) time-major")
    if mel.shape[0] == 0:
        raise DataError(f"{where}: mel has no frames")
    if not np.all(np.isfinite(mel)):
        raise DataError(f"{where}: mel holds NaN or inf")
    return mel.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------- CLI
def collect_inputs(inputs):
    """Command-line INPUTS (files or folders) → [(path, output id)]; folders are walked recursively."""
    exts = MEL_EXTENSIONS + audio.AUDIO_EXTENSIONS
    found = []
    for arg in inputs:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                for f in sorted(files):
                    if os.path.splitext(f)[1].lower() in exts and not f.endswith(".mean.npy"):
                        full = os.path.join(root, f)
                        rel = os.path.relpath(full, arg)
                        found.append((full, os.path.splitext(rel)[0].replace(os.sep, "/")))
        else:  # a missing file is reported per file later, like any unreadable one
            found.append((arg, os.path.splitext(os.path.basename(arg))[0]))
    ids = collections.Counter(i for _, i in found)
    dup = sorted(i for i, n in ids.items() if n > 1)
    if dup:
        clash = [p for p, i in found if i == dup[0]]
        raise ConfigError(f"INPUTS: {len(dup)} output name(s) would collide, e.g. {dup[0]!r} from {clash}; "
                          "pass their folder instead of the files, or embed them into separate --out folders")
    return found


def embed_to_folder(model_dir, inputs, out_dir, batch_size=DEFAULT_BATCH_SIZE, progress=True, log=None,
                    published_frontend=False):
    """Embed INPUTS into OUT_DIR (see the module doc); returns (number written, [(path, error)]).
    PUBLISHED_FRONTEND: `cmir_tf.released.PublishedEmbedder` (the published encode.py's choices)."""
    from tqdm import tqdm

    log = log or sys.stderr
    items = collect_inputs(inputs)
    if not items:
        raise ConfigError("INPUTS: no audio or .npy files given")
    require_output_dir(out_dir, "output folder")
    remove_stale_temps(out_dir)
    make = Embedder
    if published_frontend:
        from cmir_tf.released import PublishedEmbedder as make
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
            base = os.path.join(out_dir, *out_of[path].split("/"))
            save_npy(base + ".npy", np.asarray(patches, np.float32))
            save_npy(base + ".mean.npy", np.asarray(mean, np.float32))
            written += 1
    finally:
        bar.close()
    return written, failed


@cli.command
def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.embed",
        description="Embed audio files (wav, mp3, flac, ogg) or Melon mel .npy files with an exported model: "
                    "OUT/<id>.npy holds the (patches, 128) embeddings of the non-overlapping 256-frame patches, "
                    "OUT/<id>.mean.npy their mean. Unreadable inputs are reported and skipped (exit status 1).")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="export folder (with saved_model/<N>/: the highest N is used) or a SavedModel folder")
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="audio or .npy files, or folders searched recursively (ids keep the relative path)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"patches per model call, across files (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--published-frontend", action="store_true",
                   help="the published encode.py's choices: the centre 29.1 s of each audio file (shorter files "
                        "are skipped), and the 1024-d `features` per patch instead of the 128-d embeddings; "
                        "audio inputs only")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be ≥ 1, got {args.batch_size}")
    try:
        find_saved_model(args.model)
    except ExportError as e:
        raise ExportError(f"--model: {e}") from None
    written, failed = embed_to_folder(args.model, args.inputs, args.out, args.batch_size,
                                      progress=not args.no_progress, published_frontend=args.published_frontend)
    print(f"{written} embedded into {args.out}" + (f", {len(failed)} failed" if failed else ""), file=sys.stderr)
    return EXIT_PARTIAL if failed else 0


if __name__ == "__main__":
    sys.exit(main())
