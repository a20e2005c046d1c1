"""An exported model as an embedder: audio files or Melon mels → per-patch embeddings and the track mean.

A track's mel (Melon's front end, `cmir_tf.audio.frontend`) is cut into non-overlapping 256-frame patches
(the incomplete tail is dropped; a track shorter than one patch gives one patch padded with −200 dB,
as `frontend.patches` and the SavedModel's `embed_waveform` do); each patch goes through the exported
`serving_default` signature, in batches that span tracks (:class:`Embedder`). Inputs: audio in any
format libsndfile decodes (decoded and resampled to 16 kHz mono by `cmir_tf.audio.decoding`: libsndfile
and libsoxr, see docs/AUDIO.md) or Melon mel `.npy` (48 × frames, dB). Files are read in two threads
while the model runs; the results do not depend on it. :mod:`cmir_tf.embed.folder` writes the
embeddings of many inputs into a folder (``python -m cmir_tf.embed``).
"""
import collections
import concurrent.futures
import os

import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.audio import decoding as audio
from cmir_tf.audio import frontend
from cmir_tf.errors import CmirError, ConfigError, DataError, ExportError
from cmir_tf.export.exportdir import find_saved_model

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
            from cmir_tf.data import melon

            return melon.load_mel(path)
        if ext in audio.audio_extensions():
            return self.mel(audio.load_audio(path))  # never empty: an empty stream is a DataError
        raise DataError(f"{path}: unsupported file type {ext or '(none)'!r}; expected audio that libsndfile "
                        f"decodes ({' '.join(audio.AUDIO_EXTENSIONS)} .opus .aiff …) or a Melon mel .npy")

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
        number of threads (`cmir_tf.audio.decoding` is thread-safe; tested bit for bit with 1, 2 and 4).
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
