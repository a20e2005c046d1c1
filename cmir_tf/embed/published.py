"""The published inference front end (``python -m cmir_tf.embed --published-frontend``).

The authors' ``encode.py`` (andrebola/contrastive-mir-learning) embeds an audio file as: Essentia's
``MonoLoader`` at 16 kHz, **the centre 29.1 s** (``round(29.1 · 16000)`` = 465,600 samples from
``(n − 465,600) // 2``; a shorter file raises and is skipped), Melon's mel chain
(:mod:`cmir_tf.audio.frontend`), non-overlapping 256-frame patches, and the model's first output, the
1024-d ``features``. :class:`PublishedEmbedder` does the same with an export of a released checkpoint
(:func:`cmir_tf.export.released.export_published`).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.audio import decoding as audio
from cmir_tf.embed.embedder import DEFAULT_BATCH_SIZE, Embedder
from cmir_tf.errors import DataError
from cmir_tf.export.released import torch_feature_order

__all__ = ["SEGMENT_SECONDS", "SEGMENT_SAMPLES", "centre_segment", "PublishedEmbedder"]

SEGMENT_SECONDS = 29.1
SEGMENT_SAMPLES = round(SEGMENT_SECONDS * C.SAMPLE_RATE)  # 465,600: what encode.py's cut_audio keeps


def centre_segment(waveform, where="audio"):
    """The centre 29.1 s of a 16 kHz waveform, as the published ``encode.py`` (``cut_audio``) keeps.

    Start ``(n − 465,600) // 2``; a waveform shorter than 29.1 s is a DataError (encode.py raises
    ValueError for it and skips the file).
    """
    x = np.asarray(waveform, np.float32)
    if x.shape[0] < SEGMENT_SAMPLES:
        raise DataError(f"{where}: {x.shape[0] / C.SAMPLE_RATE:.2f} s is shorter than the {SEGMENT_SECONDS} s "
                        "the published front end (encode.py) cuts from the centre; it skips such files")
    start = (x.shape[0] - SEGMENT_SAMPLES) // 2
    return x[start:start + SEGMENT_SAMPLES]



class PublishedEmbedder(Embedder):
    """An :class:`cmir_tf.embed.embedder.Embedder` with the published front end (``embed --published-frontend``):
    audio files are cut to their centre 29.1 s (:func:`centre_segment`) before Melon's mel, and each
    256-frame patch gives the 1024-d ``features`` output (what encode.py saves) instead of the 128-d
    embedding, in the published model's order (:func:`torch_feature_order`). Melon mel ``.npy`` inputs
    are refused: encode.py cuts the waveform, which a stored mel no longer has."""

    output = "features"

    def __init__(self, model_dir, batch_size=DEFAULT_BATCH_SIZE):
        super().__init__(model_dir, batch_size)
        self.dim = int(self._serve.structured_outputs[self.output].shape[-1])

    def embed_patches(self, patches):
        """(P, 256, 48) float32 → (P, 1024) features in PyTorch's order, ``batch_size`` patches per call."""
        patches = np.asarray(patches, np.float32)
        out = [torch_feature_order(self._serve(melspectrogram=tf.constant(patches[i:i + self.batch_size]))
                                   [self.output].numpy()) for i in range(0, len(patches), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.dim), np.float32)

    def load_mel(self, path):
        path = os.fspath(path)
        if os.path.splitext(path)[1].lower() in audio.AUDIO_EXTENSIONS:
            return self.mel(centre_segment(audio.load_audio(path), path))
        raise DataError(f"{path}: the published front end (--published-frontend) needs an audio file "
                        f"({' '.join(audio.AUDIO_EXTENSIONS)}): it cuts the waveform's centre 29.1 s")
