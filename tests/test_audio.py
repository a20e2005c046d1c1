"""Decoding and resampling (cmir_tf.audio.decoding) against independent references.

- resampling: an exact band-limited truth (sums of sinusoids evaluated at the output times),
  scipy.signal.resample_poly, and the phase of a tone / an analytic chirp for time alignment;
- decoding: signals written in the test by scipy (wav) and soundfile/libsndfile (flac, ogg Vorbis, mp3),
  compared after resampling the written signal independently (resample_poly);
- damaged files: each raises DataError "<path>: <reason>" on one line, without hanging, crashing, or
  letting mpg123 print to stderr;
- concurrency: 4 threads decoding a mixed set of good and damaged files get exactly the one-thread results.
"""
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
from math import gcd

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from cmir_tf import constants as C
from cmir_tf.audio import decoding as A
from cmir_tf.errors import DataError

sf = pytest.importorskip("soundfile")
SR = C.SAMPLE_RATE
RATES = (8000, 11025, 22050, 44100, 48000)


# ---------------------------------------------------------------------------------------------
# Helpers: signals, writers, comparisons
# ---------------------------------------------------------------------------------------------
def _inband_noise(n, rate, fmax, seed):
    """Periodic white noise limited to (50 Hz, fmax)."""
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < 50) | (f > fmax)] = 0
    x = np.fft.irfft(spec, n)
    return x / x.std() * 0.3


def _sum_of_sines(rate, fmax, seed, k=64):
    """A band-limited signal as a function of time: its exact samples at any rate."""
    rng = np.random.default_rng(seed)
    f, ph, amp = rng.uniform(50, fmax, k), rng.uniform(0, 2 * np.pi, k), rng.uniform(0.5, 1, k) / k
    return lambda t: (amp * np.sin(2 * np.pi * f * np.asarray(t)[:, None] + ph)).sum(axis=1)


def _relrms(a, b, edge=100):
    m = min(len(a), len(b))
    a, b = np.asarray(a[edge:m - edge], np.float64), np.asarray(b[edge:m - edge], np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))


def _resample_poly(x, rate_in):
    g = gcd(SR, rate_in)
    return resample_poly(np.asarray(x, np.float64), SR // g, rate_in // g)


def _lag(a, b, max_lag=2000):
    """Integer lag of a relative to b (positive: a is late), by FFT cross-correlation."""
    m = min(len(a), len(b))
    c = np.fft.irfft(np.fft.rfft(a[:m], 2 * m) * np.conj(np.fft.rfft(b[:m], 2 * m)), 2 * m)
    c = np.concatenate([c[-max_lag:], c[:max_lag + 1]])
    return int(np.argmax(c)) - max_lag


def _music(rate, channels, seconds, seed):
    """Two different chirps per channel plus shared in-band noise: no periodicity, so misalignment shows."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    noise = _inband_noise(n, rate, min(6000, 0.4 * rate), seed)
    chans = [0.4 * np.sin(2 * np.pi * (200 * t + 300 * t**2)) + 0.5 * noise,
             0.3 * np.sin(2 * np.pi * (300 * t + 200 * t**2)) + 0.5 * noise]
    return np.stack(chans[:channels], axis=1).astype(np.float32)


FORMATS = {"ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16"),
           "wav": ("WAV", "PCM_16")}


def write_audio(path, x, rate, ext=None):
    """Write float samples (n, ch) with libsndfile, in blocks: libvorbis's encoder overflows its stack on
    one long write (libsndfile issue #1095, python-soundfile #426), a crash of the writer, not of us."""
    fmt, subtype = FORMATS[ext or str(path).rsplit(".", 1)[1]]
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    with sf.SoundFile(str(path), "w", rate, x.shape[1], format=fmt, subtype=subtype) as f:
        for i in range(0, len(x), 32768):
            f.write(x[i:i + 32768])
    return path


# ---------------------------------------------------------------------------------------------
# Resampling (libsoxr HQ)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate_in", RATES)
def test_resample_equals_the_exact_band_limited_signal(rate_in):
    """A sum of 64 sinusoids below 85 % of the lower Nyquist, resampled, equals the same sum evaluated at
    the output times: measured relative rms 1.4e-4 at 22.05/44.1 kHz, 5.5e-5 at 11.025, 2e-7 at 8/48
    (resample_poly's default filter: 3.2e-3; tensorflow-io 0.37.1: 0.12 at 44.1, 0.62 at 11.025 kHz)."""
    fmax = 0.85 * min(rate_in, SR) / 2
    s = _sum_of_sines(rate_in, fmax, seed=1)
    x = s(np.arange(2 * rate_in) / rate_in).astype(np.float32)
    y = A.resample(x, rate_in, SR)
    assert y.dtype == np.float32 and y.shape == (2 * SR,)
    assert _relrms(y, s(np.arange(len(y)) / SR), edge=400) < 5e-4


@pytest.mark.parametrize("rate_in", RATES + (32000,))
def test_resample_matches_resample_poly(rate_in):
    """In-band noise: measured 1.0e-3 .. 1.35e-3 relative rms — the limit of resample_poly's own
    Kaiser(β=5) filter (see the previous test); a tone agrees to 2e-4."""
    n = 2 * rate_in
    fmax = 0.85 * min(rate_in, SR) / 2
    noise = _inband_noise(n, rate_in, fmax, seed=2)
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate_in)
    for x, tol in ((noise, 2e-3), (tone, 2e-3)):
        ours = A.resample(x.astype(np.float32), rate_in, SR)
        ref = _resample_poly(x, rate_in)
        assert ours.shape == ref.shape == (2 * SR,)
        assert _relrms(ours, ref) < tol


@pytest.mark.parametrize("rate_in", RATES)
def test_resample_is_time_aligned(rate_in):
    """No latency: a 1 kHz tone's fitted phase puts the output within 0.005 samples of the input's time
    line (measured < 1e-4; tensorflow-io left −0.073 at 44.1/22.05 kHz, −0.56 at 11.025), gain 1 ± 1e-4;
    a chirp over the whole band matches the analytic chirp at the output times (measured ≤ 8e-5)."""
    n = 2 * rate_in
    t = np.arange(n) / rate_in
    f0 = 1000.0
    y = A.resample((0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), rate_in, SR)
    to = np.arange(len(y)) / SR
    core = slice(200, -200)
    z = np.sum(y[core] * np.exp(-2j * np.pi * f0 * to[core])) * 2 / len(to[core])
    assert abs(abs(z) - 0.5) < 5e-5
    offset = -(np.angle(z) + np.pi / 2) / (2 * np.pi * f0) * SR  # output samples; > 0 means late
    assert abs(offset) < 0.005, offset

    f1, T = 0.8 * min(rate_in, SR) / 2, n / rate_in
    chirp = lambda tt: 0.5 * np.sin(2 * np.pi * (50 * tt + (f1 - 50) / (2 * T) * tt**2))  # noqa: E731
    y = A.resample(chirp(t).astype(np.float32), rate_in, SR)
    assert _relrms(y, chirp(np.arange(len(y)) / SR), edge=400) < 5e-4


def test_resample_impulse_peaks_where_it_was():
    """A band-limited click at an integer input sample k lands at k·16000/rate in the output (its
    sub-sample position found by a parabola through the three highest samples)."""
    for rate_in in RATES:
        k = rate_in // 2 + 7
        x = np.zeros(rate_in, np.float32)
        x[k] = 1.0
        y = A.resample(A.resample(x, rate_in, 4000), 4000, rate_in)  # band-limit to 2 kHz, back
        y = A.resample(y, rate_in, SR).astype(np.float64)
        p = int(np.argmax(y))
        frac = 0.5 * (y[p - 1] - y[p + 1]) / (y[p - 1] - 2 * y[p] + y[p + 1])
        assert abs(p + frac - k * SR / rate_in) < 0.02, rate_in


def test_resample_length_is_the_ceiling_for_every_length():
    """ceil(n · out / in) samples (resample_poly's count), where libsoxr alone gives one fewer for about
    half of all n at 11.025/22.05/44.1 kHz; the padding that fixes it leaves every sample bit-identical."""
    soxr = pytest.importorskip("soxr")
    rng = np.random.default_rng(3)
    for rate_in in RATES + (12345,):
        for n in list(range(0, 60)) + [1000, 44099, 44100, 44101]:
            x = rng.standard_normal(n).astype(np.float32)
            y = A.resample(x, rate_in, SR)
            assert len(y) == -(-n * SR // rate_in) == len(resample_poly(np.zeros(n), SR, rate_in)), (rate_in, n)
        x = rng.standard_normal(44100).astype(np.float32)
        plain = soxr.resample(x, rate_in, SR, quality="HQ")
        np.testing.assert_array_equal(A.resample(x, rate_in, SR)[:len(plain)], plain)


def test_resample_same_rate_copies_and_empty_is_empty():
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    y = A.resample(x, SR, SR)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    assert A.resample(np.zeros(0, np.float32), 44100, SR).shape == (0,)
    with pytest.raises(ValueError, match="1-D"):
        A.resample(np.zeros((10, 2), np.float32), 44100, SR)


# ---------------------------------------------------------------------------------------------
# Decoding: PCM scaling and downmix, exactly
# ---------------------------------------------------------------------------------------------
def test_wav_int16_stereo_is_scaled_downmixed_by_mean_and_resampled(tmp_path):
    pcm = np.round(_music(44100, 2, 1.5, seed=5) * 32767).astype(np.int16)
    pcm[0] = (-32768, 32767)
    wavfile.write(tmp_path / "a.wav", 44100, pcm)
    x, rate = A.decode(tmp_path / "a.wav")
    want = (pcm.astype(np.float32) / np.float32(32768)).mean(axis=1, dtype=np.float32)
    assert rate == 44100 and x.dtype == np.float32
    np.testing.assert_array_equal(x, want)
    assert x[0] == np.float32((-1.0 + 32767 / 32768) / 2)
    y = A.load_audio(tmp_path / "a.wav")
    assert y.shape == (24000,)
    np.testing.assert_array_equal(y, A.resample(want, 44100, SR))


@pytest.mark.parametrize("dtype, full_scale", [(np.uint8, None), (np.int16, 2.0**15), (np.int32, 2.0**31)])
def test_integer_pcm_is_scaled_to_minus_one_one(dtype, full_scale, tmp_path):
    """x / 2^(bits−1): the most negative code is −1.0, the most positive just under 1 (8-bit WAV is
    unsigned with 128 as zero)."""
    info = np.iinfo(dtype)
    codes = np.array([info.min, info.max, 0, 1, info.min + 1], dtype)
    wavfile.write(tmp_path / "i.wav", SR, codes)
    x, _ = A.decode(tmp_path / "i.wav")
    if dtype == np.uint8:
        want = (codes.astype(np.float64) - 128) / 128
    else:
        want = codes.astype(np.float64) / full_scale
    # float32 holds 24 bits: (2^31 − 1) / 2^31 would round to 1.0; it is kept at the float below 1
    want = np.minimum(want.astype(np.float32), np.nextafter(np.float32(1), np.float32(0)))
    np.testing.assert_array_equal(x, want)
    assert x.min() == -1.0 and x.max() < 1.0


def test_pcm24_and_float_wav_and_many_channels(tmp_path):
    rng = np.random.default_rng(6)
    codes = rng.integers(-(2**23), 2**23, size=(500, 3))
    codes[0] = -(2**23)
    sf.write(tmp_path / "p24.wav", codes.astype(np.int32) * 256, 22050, subtype="PCM_24")
    x, rate = A.decode(tmp_path / "p24.wav")
    want = (codes / 2.0**23).astype(np.float32)
    assert rate == 22050
    np.testing.assert_allclose(x, want.mean(axis=1), rtol=0, atol=1e-7)  # float32 sum order differs ≤ 1 ulp
    # float PCM is kept as stored, values beyond ±1 included
    f = (rng.standard_normal((400, 6)) * 1.5).astype(np.float32)
    sf.write(tmp_path / "f.wav", f, SR, subtype="FLOAT")
    x, _ = A.decode(tmp_path / "f.wav")
    np.testing.assert_allclose(x, f.mean(axis=1), rtol=0, atol=1e-6)
    assert np.abs(x).max() > 1.0
    np.testing.assert_array_equal(A.load_audio(tmp_path / "f.wav"), x)  # already 16 kHz: unchanged
    np.testing.assert_array_equal(A.load_audio(tmp_path / "f.wav", sample_rate=8000), A.resample(x, SR, 8000))


def test_non_finite_float_wav_is_refused(tmp_path):
    f = np.zeros((100, 1), np.float32)
    f[50] = np.nan
    sf.write(tmp_path / "nan.wav", f, SR, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav: holds NaN or infinite samples"):
        A.decode(tmp_path / "nan.wav")


# ---------------------------------------------------------------------------------------------
# Decoding: real compressed files written here (ogg Vorbis, mp3) and flac
# ---------------------------------------------------------------------------------------------
# measured relative rms of the decoded signal against the written one (ogg q default, mp3 default
# bitrate): ogg 0.13 .. 0.23, mp3 0.07 .. 0.21 (22.05 kHz MPEG-2 is the coarsest), flac < 1e-3
LOSSY_TOL = {"ogg": 0.30, "mp3": 0.30, "flac": 2e-3}
MIN_CORR = {"ogg": 0.96, "mp3": 0.96, "flac": 0.99999}
# median |Δ mel| (dB) in the bands within 40 dB of the loudest; measured: ogg 0.15 .. 0.31, mp3 0.09 ..
# 0.55 (22.05 kHz MPEG-2 the coarsest), flac 0.013 (16-bit quantisation, resamplers' differences)
MEL_TOL_DB = {"ogg": 1.0, "mp3": 1.0, "flac": 0.05}


@pytest.mark.parametrize("ext", ["ogg", "mp3", "flac"])
@pytest.mark.parametrize("rate", [22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_compressed_round_trip_length_alignment_and_content(ext, rate, channels, tmp_path):
    """The decoded file has exactly the written length (Vorbis granules; mp3: the LAME tag's delay and
    padding removed by mpg123), no offset, and the written content: compared at the file's rate and at
    16 kHz against the written signal's mean resampled independently by resample_poly."""
    x = _music(rate, channels, 3.0, seed=rate + channels)
    path = write_audio(tmp_path / f"m.{ext}", x, rate)
    mono = x.mean(axis=1)
    y, got_rate = A.decode(path)
    assert got_rate == rate and y.dtype == np.float32
    assert len(y) == len(x)
    assert _lag(y, mono) == 0
    assert _relrms(y, mono, edge=400) < LOSSY_TOL[ext]

    z = A.load_audio(path)
    ref = _resample_poly(mono, rate)
    assert z.shape == ref.shape == (48000,)
    assert _lag(z, ref) == 0
    assert _relrms(z, ref, edge=400) < LOSSY_TOL[ext] + 2e-3
    assert np.corrcoef(z[400:-400], ref[400:-400])[0, 1] > MIN_CORR[ext]
    # the resampling step alone, free of the codec's error: the decoded signal through resample_poly
    # (measured ≤ 1.2e-3, resample_poly's own filter; tensorflow-io's offset made 0.05 .. 0.1)
    assert _relrms(z, _resample_poly(y, rate), edge=400) < 2e-3
    # and the mel spectrogram a user computes from it is close in the bands that carry the signal
    from cmir_tf.audio.frontend import melspectrogram

    a, b = melspectrogram(z).numpy(), melspectrogram(ref.astype(np.float32)).numpy()
    loud = b > b.max() - 40
    assert np.median(np.abs(a - b)[loud]) < MEL_TOL_DB[ext]


def _mpeg_frames(data):
    """(offset, size) of each MPEG frame after an ID3v2 tag, by walking the headers (independent of
    cmir_tf.audio.decoding's walker: plain MPEG-1/2 layer III arithmetic)."""
    kbps = {3: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
            2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000)}
    p, out = 0, []
    while p + 4 <= len(data) and data[p] == 0xFF:
        h = int.from_bytes(data[p:p + 4], "big")
        version = (h >> 19) & 3
        br, sr, pad = kbps[version][(h >> 12) & 15] * 1000, rates[version][(h >> 10) & 3], (h >> 9) & 1
        size = (144 if version == 3 else 72) * br // sr + pad
        out.append((p, size))
        p += size
    return out


@pytest.mark.parametrize("rate", [22050, 44100])
@pytest.mark.parametrize("bitrate_mode", ["VARIABLE", "CONSTANT"])
def test_mp3_encoder_delay_as_mpg123_handles_it(rate, bitrate_mode, tmp_path):
    """With LAME's Info tag (what libsndfile writes): mpg123 removes delay (576) + decoder delay (529) and
    the padding: exact length, no lag. Without the tag (the Info frame cut out): nothing is removed —
    every frame's samples, the signal 1105 samples late. docs/AUDIO.md states this behaviour.

    Without the tag libsndfile, reading a regular file, stops at mpg123's bitrate-based length estimate:
    a VBR stream came out cut to a quarter, a CBR one announced more than it held. Every frame decoded
    here is the proof that the stream goes to libsndfile through a pipe."""
    x = _music(rate, 1, 2.0, seed=9)
    fmt, subtype = FORMATS["mp3"]
    path = tmp_path / "d.mp3"
    # libsndfile applies the bitrate mode together with a compression level (alone, it stays VBR)
    with sf.SoundFile(str(path), "w", rate, 1, format=fmt, subtype=subtype, bitrate_mode=bitrate_mode,
                      compression_level=0.5) as f:
        f.write(x)
    y, _ = A.decode(path)
    assert len(y) == len(x) and _lag(y, x[:, 0]) == 0
    data = path.read_bytes()
    frames = _mpeg_frames(data)
    info_at, info_size = frames[0]
    assert data[info_at + 4:info_at + info_size].find(b"Info") >= 0 or data[info_at:info_at + info_size].find(b"Xing") >= 0
    spf = 1152 if rate >= 32000 else 576
    sizes = {size for _, size in frames[1:]}
    assert (len(sizes) > 2) == (bitrate_mode == "VARIABLE")  # CBR: sizes differ by the padding byte only
    for tail in (b"", b"TAG" + bytes(125)):  # with an ID3v1 tag too
        (tmp_path / "notag.mp3").write_bytes(data[:info_at] + data[info_at + info_size:] + tail)
        y2, _ = A.decode(tmp_path / "notag.mp3")
        assert len(y2) == (len(frames) - 1) * spf
        assert _lag(y2, x[:, 0]) == 576 + 529


# ---------------------------------------------------------------------------------------------
# Damaged and non-audio inputs: DataError "<path>: <reason>", one line, never a hang or crash
# ---------------------------------------------------------------------------------------------
def _flip(data, at, bit=0):
    b = bytearray(data)
    b[at] ^= 1 << bit
    return bytes(b)


def _damaged_files(folder):
    """{path: reason regex} for every kind of bad input, written into FOLDER."""
    folder.mkdir(exist_ok=True)
    good = {}
    for ext, rate in (("wav", 44100), ("flac", 48000), ("ogg", 44100), ("mp3", 44100)):
        good[ext] = write_audio(folder / f"src.{ext}", _music(rate, 2, 4.0, seed=11), rate).read_bytes()
    bad = {}

    def put(name, data, reason):
        (folder / name).write_bytes(data)
        bad[str(folder / name)] = reason

    put("empty.mp3", b"", r"empty file \(0 bytes\)")
    put("text.wav", b"not audio", r"not a readable audio file \(Format not recognised\)")
    put("text.ogg", b"not audio at all\n" * 100, r"not a readable audio file \(Format not recognised\)")
    put("text.mp3", b"not audio at all\n" * 100, r"not an MPEG audio stream")
    for ext, reason in (("wav", r"truncated WAV: its data chunk announces \d+ bytes, the file holds \d+"),
                        ("flac", r"damaged audio stream \(flac decoder lost sync\)"),
                        ("ogg", r"truncated Ogg file: it does not end with a complete Ogg page"),
                        ("mp3", r"truncated mp3: frame \d+ at byte \d+ needs \d+ bytes")):
        put(f"truncated.{ext}", good[ext][: len(good[ext]) * 2 // 3], reason)
    put("flipped.wav", _flip(good["wav"], 0), r"not a readable audio file \(Format not recognised\)")  # 'RIFF'
    put("flipped.flac", _flip(good["flac"], len(good["flac"]) // 2, 3), r"damaged audio stream")  # frame CRC
    put("flipped.ogg", _flip(good["ogg"], len(good["ogg"]) // 2, 5),  # a page CRC: the page is dropped
        r"damaged or truncated: \d+ samples decoded of the \d+ its header announces"
        r"|damaged or truncated: \d+ samples decoded, its last Ogg page announces \d+"
        r"|damaged Ogg file: page \d+ at byte \d+ fails its CRC")
    frames = _mpeg_frames(good["mp3"])
    put("flipped.mp3", _flip(good["mp3"], frames[len(frames) // 2][0] + 2, 7),  # a frame header's bitrate
        r"damaged MPEG stream: no frame header at byte \d+ \(after frame \d+\)")
    # an ID3v2 tag whose size runs past the file's end (a damaged header; its size once printed negative)
    put("id3_past_end.mp3", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + good["mp3"][:4000],
        r"damaged or truncated \(its ID3v2 tags claim 268435465 bytes, the file has 4010\)")
    (folder / "dir.wav").mkdir()
    bad[str(folder / "dir.wav")] = r"is a directory, not an audio file"
    bad[str(folder / "missing.ogg")] = r"no such file"
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.wav")
        bad[str(folder / "fifo.wav")] = r"not a regular file \(a FIFO, socket or device\)"
    return bad


# ---------------------------------------------------------------------------------------------
# Short Ogg tails: an intact file whose last granule announces a little more than it decodes
# ---------------------------------------------------------------------------------------------
def _ogg_with_granule_raised(src, dst, by, damage_last_page=False):
    """Copy the Ogg file SRC to DST with its last page's granule position raised by BY samples and the
    page CRC recomputed (what real encoders' final pages look like); DAMAGE_LAST_PAGE then flips a bit
    of that page's audio, so only its CRC tells."""
    from cmir_tf.audio.framing import ogg_crc

    d = bytearray(src.read_bytes())
    at = d.rfind(b"OggS")
    granule = int.from_bytes(d[at + 6:at + 14], "little", signed=True)
    d[at + 6:at + 14] = (granule + by).to_bytes(8, "little", signed=True)
    d[at + 22:at + 26] = bytes(4)
    d[at + 22:at + 26] = ogg_crc(bytes(d[at:])).to_bytes(4, "little")
    if damage_last_page:
        d[-1] ^= 0x01
    dst.write_bytes(bytes(d))
    return granule + by


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_intact_ogg_short_of_its_last_granule_by_a_short_tail_is_decoded(tmp_path, subtype):
    """5 of 172 real Ogg Vorbis/Opus files of Debian's game-music packages decode 10 to 5,806 samples
    short of their last granule position; with every page intact, up to 0.25 s short is accepted."""
    x = _music(48000, 2, 2.0, seed=3)
    with sf.SoundFile(str(tmp_path / "src.ogg"), "w", 48000, 2, format="OGG", subtype=subtype) as f:
        f.write(x)
    ref, rate = A.decode(tmp_path / "src.ogg")
    tol = round(A.OGG_SHORT_TAIL_SECONDS * rate)
    assert tol == 12000
    for by in (10, 5806, tol - 200):
        announced = _ogg_with_granule_raised(tmp_path / "src.ogg", tmp_path / "short.ogg", by)
        y, r = A.decode(tmp_path / "short.ogg")
        assert r == rate and len(ref) <= len(y) <= announced, by  # Opus: the end trim moves with the granule
        np.testing.assert_array_equal(y[:len(ref) - 1000], ref[:len(ref) - 1000])
    _ogg_with_granule_raised(tmp_path / "src.ogg", tmp_path / "long.ogg", tol + 2000)
    with pytest.raises(DataError, match=r"long\.ogg: damaged or truncated: \d+ samples decoded of the \d+"):
        A.decode(tmp_path / "long.ogg")


def test_short_ogg_tail_with_a_damaged_page_is_refused_naming_the_page(tmp_path):
    """Within the tolerance the pages are checked: a flipped bit in the last page (libogg drops it without
    a word) is refused, naming the page; so is a page lost from the middle (a gap in the sequence)."""
    noise = 0.1 * np.random.default_rng(4).standard_normal((96000, 2))  # high bitrate: short pages
    write_audio(tmp_path / "src.ogg", noise, 48000)
    _ogg_with_granule_raised(tmp_path / "src.ogg", tmp_path / "flip.ogg", 100, damage_last_page=True)
    with pytest.raises(DataError, match=r"flip\.ogg: damaged Ogg file: page (\d+) at byte \d+ fails its CRC"):
        A.decode(tmp_path / "flip.ogg")
    from cmir_tf.audio.framing import ogg_damage

    d = (tmp_path / "src.ogg").read_bytes()
    pages = [m for m in range(len(d)) if d.startswith(b"OggS", m)]
    assert ogg_damage(d) is None
    gap = d[:pages[3]] + d[pages[4]:]
    assert ogg_damage(gap) == f"page 3 at byte {pages[3]} has sequence number 4, expected 3 (pages lost)"


def test_every_kind_of_bad_input_is_one_data_error_line(tmp_path):
    bad = _damaged_files(tmp_path / "bad")
    for path, reason in bad.items():
        outcome = {}

        def run(p=path):
            try:
                A.load_audio(p)
                outcome["result"] = "decoded"
            except DataError as e:
                outcome["result"] = e
            except BaseException as e:  # noqa: BLE001 — reported below
                outcome["result"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive(), f"{path}: decoding hangs"
        err = outcome["result"]
        assert isinstance(err, DataError), f"{path}: {err!r}"
        msg = str(err)
        assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
        assert re.search(reason, msg[len(path) + 2:]), msg


def test_structurally_broken_mp3_is_refused_before_mpg123_prints_anything(tmp_path):
    """mpg123 (inside libsndfile) writes its own warnings to stderr on a truncated or resyncing stream;
    those files are refused by the frame walk first, so the one error line is the only output."""
    bad = _damaged_files(tmp_path / "bad")
    mp3s = [p for p in bad if p.endswith(".mp3") and os.path.isfile(p)]
    script = textwrap.dedent(f"""
        from cmir_tf import audio
        from cmir_tf.errors import DataError
        for p in {mp3s!r}:
            try:
                audio.decode(p)
            except DataError as e:
                print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == len(mp3s)


def test_mpeg_framing_quirks_that_mpg123_accepts_are_accepted(tmp_path):
    """ID3v2 tag, leading zeros/junk (mpg123 skips up to 64 KiB), ID3v1/APE tags and junk after the
    frames the Info header announces: decoded exactly like the plain file, nothing refused."""
    x = _music(44100, 2, 2.0, seed=12)
    plain = write_audio(tmp_path / "p.mp3", x, 44100).read_bytes()
    want, _ = A.decode(tmp_path / "p.mp3")
    title = b"TIT2" + (4).to_bytes(4, "big") + b"\x00\x00" + b"\x03abc"  # a 14-byte text frame
    id3v2 = b"ID3\x04\x00\x00" + (len(title) + 6).to_bytes(4, "big") + title + bytes(6)  # + 6 bytes padding
    variants = {"id3v2": id3v2 + plain, "zeros": bytes(300) + plain, "junk": b"junk" * 25 + plain,
                "id3v1": plain + b"TAG" + bytes(125), "ape": plain + b"APETAGEX" + bytes(24) + b"TAG" + bytes(125),
                "trailing_junk": plain + b"trailing junk"}
    for name, data in variants.items():
        (tmp_path / f"{name}.mp3").write_bytes(data)
        y, rate = A.decode(tmp_path / f"{name}.mp3")
        np.testing.assert_array_equal(y, want, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Concurrency: any number of threads, the one-thread results exactly
# ---------------------------------------------------------------------------------------------
def _mixed_set(folder):
    folder.mkdir(exist_ok=True)
    good = []
    for i, (ext, rate, ch, secs) in enumerate([("ogg", 44100, 2, 6.0), ("ogg", 48000, 1, 4.0),
                                               ("mp3", 22050, 2, 8.0), ("mp3", 48000, 2, 5.0),
                                               ("mp3", 44100, 1, 3.0), ("wav", 44100, 2, 5.0),
                                               ("flac", 48000, 2, 4.0), ("ogg", 22050, 2, 7.0)]):
        good.append(str(write_audio(folder / f"g{i}.{ext}", _music(rate, ch, secs, seed=20 + i), rate)))
    bad = list(_damaged_files(folder / "bad"))
    return good + bad


def _outcome(path):
    try:
        return A.load_audio(path)
    except DataError as e:
        return f"DataError: {e}"


def test_threads_decode_exactly_like_one_thread(tmp_path):
    """4 threads × 3 rounds, each thread over the whole mixed set in its own order: every result equals
    the one-thread result bit for bit, every bad file gives the same error message."""
    paths = _mixed_set(tmp_path)
    reference = {p: _outcome(p) for p in paths}
    assert sum(isinstance(v, np.ndarray) for v in reference.values()) == 8
    results, errors = [], []

    def worker(seed):
        order = list(paths) * 3
        random.Random(seed).shuffle(order)
        try:
            for p in order:
                results.append((p, _outcome(p)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(results) == 4 * 3 * len(paths)
    for p, got in results:
        want = reference[p]
        if isinstance(want, str):
            assert got == want, p
        else:
            assert isinstance(got, np.ndarray), (p, got)
            np.testing.assert_array_equal(got, want, err_msg=p)


# ---------------------------------------------------------------------------------------------
# The pipe mp3s reach libsndfile through
# ---------------------------------------------------------------------------------------------
def test_mp3_pipe_leaves_no_descriptor_or_thread_behind(tmp_path):
    good = write_audio(tmp_path / "g.mp3", _music(44100, 2, 3.0, seed=30), 44100)
    data = good.read_bytes()
    (tmp_path / "short.mp3").write_bytes(data[: len(data) // 2])  # refused by the frame walk
    (tmp_path / "noise.mp3").write_bytes(data[:4] + bytes(4000))  # a header, then nothing mpg123 takes
    fds = lambda: len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0  # noqa: E731
    A.decode(good)
    before_fds, before_threads = fds(), threading.active_count()
    for _ in range(20):
        for p in (good, tmp_path / "short.mp3", tmp_path / "noise.mp3"):
            try:
                A.decode(p)
            except DataError:
                pass
    assert fds() == before_fds
    assert threading.active_count() == before_threads


def test_mp3_decodes_the_same_where_sendfile_cannot_write_to_a_pipe(tmp_path, monkeypatch):
    """os.sendfile into a pipe is Linux's (macOS wants a socket): the feeder then copies through Python."""
    import errno

    path = write_audio(tmp_path / "x.mp3", _music(44100, 2, 5.0, seed=31), 44100)
    want, _ = A.decode(path)

    def refuse(*args):
        raise OSError(errno.ENOTSOCK, "Socket operation on non-socket")

    monkeypatch.setattr(os, "sendfile", refuse)
    got, _ = A.decode(path)
    np.testing.assert_array_equal(got, want)
