"""Audio front end: Melon's Essentia mel spectrogram in core TensorFlow ops.

The mel chain reproduces the one the Melon dataset was computed with (docs/DATASETS.md; Essentia 2.1b6):

    FrameGenerator(frameSize=512, hopSize=256, startFromZero=False)   centred frames
    Windowing(type='hann', normalized=False)                           symmetric Hann (weights sum 255.5)
    Spectrum()                                                         |rfft|, 257 bins
    MelBands(numberBands=48, sampleRate=16000, lowFrequencyBound=0, highFrequencyBound=8000,
             inputSize=257, weighting='linear', normalize='unit_tri', warpingFormula='slaneyMel',
             type='power')
    UnaryOperator(type='lin2db', scale=2)                              2 · 10·log10(max(x, 1e-10))

Framing, as Essentia's FrameCutter does it with ``startFromZero=False``: frame k starts at sample
256·k − 256 (256 zeros before the signal), samples past the end are zeros, and the last frame is the
first one whose centre (sample 256·k) is at or beyond the end of the signal. So a signal of n > 0
samples gives ``ceil(n / 256) + 1`` frames (3 s → 189, 30 s → 1876) and an empty one gives none.

:func:`melspectrogram` (and the :class:`MelSpectrogram` layer) use only core ops — pad, ``tf.signal.frame``,
``tf.signal.rfft``, ``abs``, ``MatMul`` with a constant filter bank, ``maximum``, ``log`` — so the graph
can be embedded in an exported SavedModel (TF Serving) or frozen graph (Essentia). Audio files are
decoded and resampled to 16 kHz mono by :mod:`cmir_tf.audio.decoding`; no decoder ever enters a graph.
"""
from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from cmir_tf import constants as C

N_FFT_BINS = C.FRAME_SIZE // 2 + 1  # 257 magnitude bins of a 512-sample frame
POWER_FLOOR = 1e-10  # Essentia's lin2db: power below this is -100 dB (×2 → DB_FLOOR = -200 dB)
DB_SCALE = 2.0  # UnaryOperator(type='lin2db', scale=2)


# ---------------------------------------------------------------------------------------------
# Filter bank (numpy, float32 arithmetic as in Essentia's MelBands → TriangularBands)
# ---------------------------------------------------------------------------------------------
def _hz_to_mel_slaney(hz: np.float32) -> np.float32:
    """Slaney's (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.float32(hz)
    lin_slope = np.float32(3.0 / 200.0)
    if hz < np.float32(1000.0):
        return np.float32(hz * lin_slope)
    min_log_mel = np.float32(1000.0) * lin_slope
    log_step = np.float32(math.log(6.4) / 27.0)
    return np.float32(min_log_mel + np.float32(np.log(hz / np.float32(1000.0))) / log_step)


def _mel_to_hz_slaney(mel: np.float32) -> np.float32:
    mel = np.float32(mel)
    lin_slope = np.float32(3.0 / 200.0)
    min_log_mel = np.float32(1000.0) * lin_slope
    if mel < min_log_mel:
        return np.float32(mel / lin_slope)
    log_step = np.float32(math.log(6.4) / 27.0)
    return np.float32(np.float32(1000.0) * np.float32(np.exp((mel - min_log_mel) * log_step)))


def mel_band_edges(n_bands: int = C.N_BANDS, fmin: float = C.MEL_FMIN, fmax: float = C.MEL_FMAX) -> np.ndarray:
    """The ``n_bands + 2`` triangle corner frequencies (Hz), equally spaced on Slaney's mel scale.

    Essentia accumulates the mel increment in single precision; so does this function.
    """
    low = _hz_to_mel_slaney(fmin)
    high = _hz_to_mel_slaney(fmax)
    step = np.float32((high - low) / np.float32(n_bands + 1))
    edges = np.empty(n_bands + 2, np.float32)
    mel = low
    for i in range(n_bands + 2):
        edges[i] = _mel_to_hz_slaney(mel)
        mel = np.float32(mel + step)
    return edges


@functools.lru_cache(maxsize=8)
def _mel_filterbank_cached(n_bands, sample_rate, fmin, fmax, n_bins) -> np.ndarray:
    edges = mel_band_edges(n_bands, fmin, fmax)
    scale = np.float32(np.float32(sample_rate / 2.0) / np.float32(n_bins - 1))  # Hz per bin
    fb = np.zeros((n_bands, n_bins), np.float32)
    for i in range(n_bands):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        step_up = np.float32(mid - lo)
        step_down = np.float32(hi - mid)
        # Every bin with lo <= f < hi (Essentia 2.1b6 loops from round(lo/Δf) to round(hi/Δf)
        # inclusive, which covers exactly those bins).
        for j in range(int(lo / scale), min(int(hi / scale) + 2, n_bins)):
            f = np.float32(np.float32(j) * scale)
            if lo <= f < mid:
                fb[i, j] = np.float32(f - lo) / step_up
            elif mid <= f < hi:
                fb[i, j] = np.float32(hi - f) / step_down
        # normalize='unit_tri': every triangle gets area 1 in Hz (height 2 / bandwidth).
        fb[i] *= np.float32(2.0) / np.float32(hi - lo)
    fb = fb.T.copy()  # (n_bins, n_bands): power spectrum (…, n_bins) @ fb
    fb.setflags(write=False)
    return fb


def mel_filterbank(
    n_bands: int = C.N_BANDS,
    sample_rate: int = C.SAMPLE_RATE,
    fmin: float = C.MEL_FMIN,
    fmax: float = C.MEL_FMAX,
    n_bins: int = N_FFT_BINS,
) -> np.ndarray:
    """Essentia's ``MelBands`` weights (slaneyMel, weighting='linear', unit_tri) as ``(n_bins, n_bands)``.

    Band i is a triangle over corner frequencies ``edges[i] < edges[i+1] < edges[i+2]`` evaluated at the
    bin frequencies ``f_j = j · sr/2 / (n_bins-1)`` with ``edges[i] <= f_j < edges[i+2]``, then scaled by
    ``2 / (edges[i+2] - edges[i])`` (equal areas). Read-only float32 array.
    """
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    return _mel_filterbank_cached(int(n_bands), float(sample_rate), float(fmin), float(fmax), int(n_bins))


# ---------------------------------------------------------------------------------------------
# Mel spectrogram in core TF ops
# ---------------------------------------------------------------------------------------------
def num_frames(n_samples: int) -> int:
    """How many centred frames Essentia's FrameGenerator (512/256, startFromZero=False) gives."""
    n_samples = int(n_samples)
    if n_samples <= 0:
        return 0
    return -(-n_samples // C.HOP_SIZE) + 1


def melspectrogram(waveform) -> tf.Tensor:
    """16 kHz mono waveform → Melon mel spectrogram in dB, time-major.

    Args:
      waveform: float32 samples, shape ``(n,)`` or batched ``(..., n)`` (a numpy array or tensor; works
        eagerly and inside a ``tf.function``, e.g. with ``TensorSpec([None], tf.float32)``).
    Returns:
      float32 tensor ``(..., num_frames(n), 48)`` of ``2·10·log10(max(mel power, 1e-10))`` dB, i.e.
      values ≥ ``DB_FLOOR`` = −200 dB.
    """
    x = tf.convert_to_tensor(waveform, dtype=tf.float32)
    if x.shape.rank is not None and x.shape.rank == 0:
        raise ValueError("melspectrogram needs a waveform with at least one (time) dimension")
    n = tf.shape(x)[-1]
    hop, size = C.HOP_SIZE, C.FRAME_SIZE
    # 256 zeros before the signal; tf.signal.frame(pad_end=True) then zero-pads the end and gives
    # ceil((n + 256) / 256) = ceil(n / 256) + 1 frames — Essentia's count for n > 0.
    lead = tf.zeros(tf.concat([tf.shape(x)[:-1], [size - hop]], 0), tf.float32)
    frames = tf.signal.frame(tf.concat([lead, x], -1), size, hop, pad_end=True, pad_value=0.0)
    count = tf.where(n > 0, (n + hop - 1) // hop + 1, 0)  # Essentia gives no frame for no sample
    frames = frames[..., :count, :]
    window = tf.signal.hann_window(size, periodic=False, dtype=tf.float32)  # Essentia's symmetric Hann
    magnitude = tf.abs(tf.signal.rfft(frames * window))  # Spectrum: (..., T, 257)
    power = tf.square(magnitude)
    fb = tf.constant(mel_filterbank(), dtype=tf.float32)
    # A plain 2-D MatMul (not a batched one) keeps the exported graph to the most widely known ops.
    lead_shape = tf.shape(power)[:-1]
    mel = tf.matmul(tf.reshape(power, [-1, N_FFT_BINS]), fb)
    mel = tf.reshape(mel, tf.concat([lead_shape, [C.N_BANDS]], 0))
    db = (DB_SCALE * 10.0 / math.log(10.0)) * tf.math.log(tf.maximum(mel, POWER_FLOOR))
    if x.shape.rank is not None:
        db = tf.ensure_shape(db, x.shape[:-1].concatenate([None, C.N_BANDS]))
    return db


@keras.saving.register_keras_serializable(package="cmir_tf")
class MelSpectrogram(keras.layers.Layer):
    """Keras layer wrapping :func:`melspectrogram`: ``(..., n)`` float32 16 kHz → ``(..., frames, 48)`` dB.

    It has no weights; the filter bank is a graph constant. TensorFlow backend only.
    """

    def call(self, waveform):
        return melspectrogram(waveform)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (None, C.N_BANDS)


def patches(mel, patch_frames: int = C.PATCH_FRAMES, pad_value: float = C.DB_FLOOR) -> tf.Tensor:
    """Cut a ``(n_frames, bands)`` mel into non-overlapping ``(P, patch_frames, bands)`` patches.

    The incomplete tail is dropped (as Essentia's TensorflowPredict2D does with
    ``lastPatchMode='discard'``), except that a track shorter than one patch (including an empty one)
    gives exactly one patch, padded at the end with ``pad_value`` — by default ``DB_FLOOR`` (−200 dB),
    the value the front end itself gives for digital silence. So ``P = max(1, n_frames // patch_frames)``.
    Core TF ops only (usable inside an exported graph).
    """
    if int(patch_frames) <= 0:
        raise ValueError(f"patch_frames must be positive, got {patch_frames}")
    patch_frames = int(patch_frames)
    mel = tf.convert_to_tensor(mel, dtype=tf.float32)
    if mel.shape.rank is not None and mel.shape.rank != 2:
        raise ValueError(f"patches expects a (n_frames, bands) mel, got shape {mel.shape}")
    n = tf.shape(mel)[0]
    bands = mel.shape[1] if mel.shape[1] is not None else tf.shape(mel)[1]
    mel = tf.pad(mel, [[0, tf.maximum(patch_frames - n, 0)], [0, 0]], constant_values=pad_value)
    p = tf.shape(mel)[0] // patch_frames
    return tf.reshape(mel[: p * patch_frames], tf.stack([p, patch_frames, bands]))
