"""Audio files → float32 mono waveforms at 16 kHz: decoding (libsndfile) and resampling (libsoxr).

    load_audio(path, sample_rate=16000)   wav / flac / ogg (Vorbis, Opus) / mp3 → float32 mono
    decode(path)                          → (float32 mono at the file's own rate, that rate)
    resample(x, rate_in, rate_out)        float32 1-D → float32 1-D, ceil(n · rate_out / rate_in) samples

Decoding is libsndfile (through ``soundfile``, whose wheels bundle libsndfile 1.2 with libvorbis,
libFLAC, libopus and mpg123); the format is told by the file's content, not by its name. Channels are
averaged; integer PCM is scaled to [-1, 1) (x / 2^(bits−1), libsndfile's normalisation; 32-bit codes
that float32 would round up to 1.0 are kept just below it); float PCM is kept as stored. mp3: mpg123's gapless mode removes the encoder delay and padding that a LAME/Info tag
announces (the decoded signal then has exactly the encoded length and no offset); a stream without
that tag is decoded whole, 1105 samples late (LAME's 576 + the decoder's 529), as libsndfile does.

Resampling is libsoxr's linear-phase 'HQ' filter (through ``soxr``), time-aligned (no latency), and
gives ``ceil(n · rate_out / rate_in)`` samples, like ``scipy.signal.resample_poly``.

Errors: anything wrong with a file raises :class:`~cmir_tf.errors.DataError` with the one-line message
``"<path>: <reason>"`` — missing, a directory, a FIFO or device, empty, not audio, truncated, damaged
(a CRC failure, a broken MPEG frame chain, fewer samples than the header announces; an Ogg file
whose pages are all intact may fall short by up to ``OGG_SHORT_TAIL_SECONDS``, see docs/AUDIO.md) — and never hangs
or crashes the process. Before libsndfile sees an mp3 or Ogg file its framing is checked here (MPEG
frame chain, Ogg last page), because mpg123 prints its own diagnostics to stderr on broken streams and
libsndfile hides an Ogg file's missing end; see docs/AUDIO.md for what each check catches and what no
check can (a flipped bit inside PCM or inside mp3 audio data).

Thread safety: any number of threads may decode and resample at once and get exactly the results of a
single thread. libsndfile records an open failure in a process-global variable, so opening is
serialised by a lock; reading, downmixing and resampling run unlocked, with the GIL released.

Why libsndfile and libsoxr, with measurements: docs/AUDIO.md.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import stat
import threading

import numpy as np

from cmir_tf import constants as C
from cmir_tf.audio import framing
from cmir_tf.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")  # the core formats, decoded and tested everywhere
# Names libsndfile decodes but lists under another extension (its OGG is ".oga", AIFF ".aiff", MPEG ".m1a").
_EXTENSION_ALIASES = (".ogg", ".opus", ".aif", ".aifc", ".mp1", ".mp2", ".mp3", ".snd", ".wave")
# Not collected from folders: header-less ".raw" (libsndfile needs its rate and format told); ".mat" and
# ".mpc", names far more often of MATLAB data and Musepack (which libsndfile cannot decode) than of
# libsndfile's MAT4/MAT5 and Akai MPC 2k sound. Such a file named on the command line is still tried.
_NOT_COLLECTED = (".raw", ".mat", ".mpc")
RESAMPLE_QUALITY = "HQ"  # libsoxr recipe: 20-bit precision, passband to 91 % of Nyquist, linear phase
BLOCK_FRAMES = 1 << 15  # frames decoded per libsndfile call (256 KB of float32 stereo: stays in cache)
# An intact Ogg file (every page's CRC and sequence checked) may decode this much short of its last
# granule position; real files fall short by up to 0.13 s (docs/AUDIO.md, "Short Ogg tails").
OGG_SHORT_TAIL_SECONDS = 0.25
_PREALLOC_LIMIT = 1 << 27  # frames allocated up front at most (a damaged header may announce any number)

_OPEN_LOCK = threading.Lock()


def _libs():
    try:
        import soundfile  # noqa: PLC0415 — keeps `import cmir_tf.audio.decoding` light for .npy-only users
        import soxr  # noqa: PLC0415
    except (ImportError, OSError) as e:  # pragma: no cover - depends on the installation
        raise DataError(f"decoding audio needs the soundfile and soxr packages ({e})") from None
    return soundfile, soxr


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def load_audio(path, sample_rate: int = C.SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to float32 mono at ``sample_rate`` (see the module doc for the contract)."""
    x, rate = decode(path)
    return x if rate == int(sample_rate) else resample(x, rate, sample_rate)


def decode(path) -> tuple[np.ndarray, int]:
    """Decode an audio file → ``(float32 mono samples at the file's rate, rate)``; channels averaged.

    Raises :class:`DataError` ``"<path>: <reason>"`` for a file that is missing, not a regular file,
    empty, not audio, truncated or damaged, or holds no samples.
    """
    path = os.fspath(path)
    size = _regular_file_size(path)
    head = _read_range(path, 0, 512)
    kind = _sniff(head, os.path.splitext(path)[1].lower())
    expected = None  # decoded length the container announces, when it is our own reading
    opus = None  # an Ogg Opus stream's length at 48 kHz: libsndfile picks the rate it decodes at
    span = None  # (start, end) byte range fed to libsndfile through a pipe
    if kind == "mpeg":
        # read, not mmap-ed: a file truncated meanwhile would kill the process with SIGBUS
        start, end, announced, count, spf = framing.check_mpeg(path, _read_range(path, 0, size))
        span = (start, end)
        if announced is None:  # no Xing/Info header: mpg123 removes nothing, every frame is decoded
            expected = count * spf
            announcer = f"its {count} MPEG frames make"
    elif kind == "ogg":
        codec, length = framing.check_ogg(path, head, _read_range(path, max(0, size - framing.OGG_MAX_PAGE), size))
        expected, opus = (length, None) if codec == "vorbis" else (None, length if codec == "opus" else None)
        announcer = "its last Ogg page announces"
    x, rate, frames, log = _decode_libsndfile(path, span, capacity=expected)
    if opus is not None and 48000 % rate == 0:
        expected = opus * rate // 48000
    n = len(x)
    if n == 0:
        raise DataError(f"{path}: no audio samples")
    header = frames if 0 <= frames < (1 << 62) else None
    if kind == "ogg" and _short_ogg_tail(path, n, max(v for v in (header, expected, n) if v is not None), rate, size):
        header = expected = None  # every page intact: the shortfall is the granule's, not lost audio
    if header is not None and n < header:
        raise DataError(f"{path}: damaged or truncated: {n} samples decoded of the {frames} its header announces")
    if expected is not None and n != expected:
        raise DataError(f"{path}: damaged or truncated: {n} samples decoded, {announcer} {expected}")
    if kind == "wav":
        _check_wav_log(path, log)
    return x, rate


def _short_ogg_tail(path: str, n: int, announced: int, rate: int, size: int) -> bool:
    """True when an Ogg file decoded to ``n`` samples, at most :data:`OGG_SHORT_TAIL_SECONDS` short of
    the ``announced`` length, has every page intact (CRC and sequence, :func:`framing.ogg_damage`).

    Real encoders and editors write final granule positions that the decoder does not reach: a first
    page with a negative granule (pre-roll libsndfile counts twice), trailing end-of-stream pages after
    the first one (libvorbisfile stops at the first), an Opus end trim that libsndfile rounds. A damaged
    file within the tolerance is refused here, naming the page (libogg drops it without a word)."""
    short = announced - n
    if short <= 0 or short > round(OGG_SHORT_TAIL_SECONDS * rate):
        return False
    damage = framing.ogg_damage(_read_range(path, 0, size))
    if damage:
        raise DataError(f"{path}: damaged Ogg file: {damage} ({n} samples decoded of {announced})")
    return True


def resample(x, rate_in: int, rate_out: int = C.SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D signal with libsoxr 'HQ' → float32, ``ceil(len(x) · rate_out / rate_in)`` samples.

    Linear phase with its latency removed, so sample k of the output is at time k / rate_out of the
    input's time line. At equal rates the result is a float32 copy of ``x``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} → {rate_out}")
    if rate_in == rate_out:
        return x.copy()
    n_out = -(-len(x) * rate_out // rate_in)
    if n_out == 0:
        return np.zeros(0, np.float32)
    _, soxr = _libs()
    # libsoxr's one-shot call returns round(n · ratio) samples, one short of the ceiling for some n; a
    # few zeros after the end (the value libsoxr assumes there anyway) give the missing sample(s) without
    # changing the others (checked bit for bit in tests/test_audio.py).
    tail = -(-rate_in // rate_out) + 2
    padded = np.empty(len(x) + tail, np.float32)
    padded[: len(x)] = x
    padded[len(x):] = 0.0
    y = soxr.resample(padded, rate_in, rate_out, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(y[:n_out], dtype=np.float32)


def audio_extensions() -> tuple[str, ...]:
    """File extensions (lower case, with the dot) of every format the installed libsndfile decodes: its
    major formats' own extensions (``sf_command(SFC_GET_FORMAT_MAJOR)``) and the usual other names of
    the same formats (``.ogg``/``.opus`` for its ``.oga``, ``.aif``, ``.mp3``…); ``.raw``, ``.mat``, ``.mpc`` out."""
    return _audio_extensions()


@functools.lru_cache(maxsize=1)
def _audio_extensions() -> tuple[str, ...]:
    found = set(AUDIO_EXTENSIONS) | set(_EXTENSION_ALIASES)
    try:
        sf, _ = _libs()
        snd, ffi = sf._snd, sf._ffi
        count = ffi.new("int*")
        snd.sf_command(ffi.NULL, snd.SFC_GET_FORMAT_MAJOR_COUNT, count, ffi.sizeof("int"))
        for i in range(count[0]):
            info = ffi.new("SF_FORMAT_INFO*")
            info.format = i
            snd.sf_command(ffi.NULL, snd.SFC_GET_FORMAT_MAJOR, info, ffi.sizeof("SF_FORMAT_INFO"))
            if info.extension:
                found.add("." + ffi.string(info.extension).decode("ascii", "replace").lower())
    except (DataError, AttributeError, TypeError):  # pragma: no cover - soundfile without its cffi handle
        pass
    return tuple(sorted(found - set(_NOT_COLLECTED)))


# ---------------------------------------------------------------------------------------------
# The file itself
# ---------------------------------------------------------------------------------------------
def _regular_file_size(path: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block the open below until something writes to it; a device never ends
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device), not an audio file")
    if st.st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    return st.st_size


def _read_range(path: str, start: int, end: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(max(0, end - start))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


_WAV_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64")


def _sniff(head: bytes, ext: str) -> str:
    """The container, as libsndfile will tell it: by content, with '.mp3' as mpg123's last resort."""
    if head[:4] in _WAV_MAGIC:
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or framing.mpeg_header(head[:4]) is not None or ext == ".mp3":
        return "mpeg"
    return "other"  # AIFF, CAF, W64, … or not audio: libsndfile decides


# ---------------------------------------------------------------------------------------------
# libsndfile
# ---------------------------------------------------------------------------------------------
def _libsndfile_reason(message: str) -> str:
    reason = " ".join(str(message).split()).removeprefix("Error : ").rstrip(".")
    if reason.startswith("File does not exist or is not a regular file"):
        # what libsndfile says when its codec refuses the stream; the file was checked to exist above
        reason = "libsndfile's decoder cannot open the stream"
    return reason or "unknown libsndfile error"


def _decode_libsndfile(path: str, span=None, capacity=None):
    """→ (mono float32, rate, frames announced, libsndfile's log) — the log tells a truncated WAV.

    With SPAN = (start, end), libsndfile reads those bytes of the file through a pipe instead of the
    file: for an MPEG stream without a Xing/Info header, mpg123 estimates the length of a regular file
    from its first frame's bitrate and libsndfile stops reading there (a VBR file comes out cut short,
    a CBR one with tags announces more than it holds); from a pipe it decodes every frame.
    """
    sf, _ = _libs()
    feeder = read_fd = None
    try:
        if span is not None:
            read_fd, feeder = _pipe_from(path, *span)
        with _OPEN_LOCK:  # sf_open's failure code and log live in process-global variables
            try:
                # bytes: soundfile encodes a str name strictly, so a non-UTF-8 name (surrogates) would fail
                f = sf.SoundFile(os.fsencode(path) if read_fd is None else read_fd, closefd=False)
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
                reason = _libsndfile_reason(getattr(e, "error_string", None) or e)
                raise DataError(f"{path}: not a readable audio file ({reason})") from None
        with f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if rate <= 0 or channels <= 0:
                raise DataError(f"{path}: not a readable audio file (sample rate {rate}, {channels} channels)")
            log = f.extra_info
            size = capacity if capacity else frames
            x = _read_mono(f, path, channels, size, subtype=f.subtype)
    finally:
        if read_fd is not None:
            os.close(read_fd)  # a feeder still writing gets EPIPE and stops
        if feeder is not None:
            feeder.join()
    return x, rate, frames, log


def _pipe_from(path: str, start: int, end: int):
    """A pipe's read end carrying bytes [start, end) of PATH, written by a thread (os.sendfile)."""
    try:
        src = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    read_fd, write_fd = os.pipe()

    def feed():
        offset, kernel_copy = start, hasattr(os, "sendfile")
        try:
            while offset < end:
                if kernel_copy:
                    try:
                        sent = os.sendfile(write_fd, src, offset, end - offset)
                    except OSError as e:
                        if e.errno == errno.EPIPE:
                            raise
                        kernel_copy = False  # sendfile into a pipe is Linux's; elsewhere copy through here
                        continue
                else:
                    chunk = os.pread(src, min(1 << 16, end - offset), offset)
                    sent = os.write(write_fd, chunk) if chunk else 0
                if sent <= 0:
                    break
                offset += sent
        except OSError:  # the reader closed its end (EPIPE): it needs no more
            pass
        finally:
            os.close(write_fd)
            os.close(src)

    thread = threading.Thread(target=feed, name="cmir-audio-pipe", daemon=True)
    thread.start()
    return read_fd, thread


def _read_mono(f, path: str, channels: int, frames: int, subtype: str) -> np.ndarray:
    """Decode block by block into a mono buffer (never a whole interleaved copy of the file).

    libsndfile's own ``sf_readf_float`` is called through soundfile's cffi handle: soundfile's public
    read seeks back to the position after every call, and each such seek restarts the mp3/Vorbis
    decoder at that position (sf_seek has no shortcut for the current position).
    """
    sf, _ = _libs()
    float_pcm = subtype in ("FLOAT", "DOUBLE")
    # 32-bit PCM: codes within 64 of full scale round to 1.0 in float32; keep the [-1, 1) contract
    top = np.float32(np.nextafter(np.float32(1), np.float32(0))) if subtype == "PCM_32" else None
    buf = np.empty((BLOCK_FRAMES, channels), np.float32)
    out = np.empty(frames if 0 < frames <= _PREALLOC_LIMIT else 64 * BLOCK_FRAMES, np.float32)
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    raw = snd is not None and ffi is not None and hasattr(f, "_file")
    ptr = ffi.cast("float *", ffi.from_buffer(buf)) if raw else None
    n = 0
    while True:
        if raw:
            k = int(snd.sf_readf_float(f._file, ptr, BLOCK_FRAMES))  # releases the GIL
            code = int(snd.sf_error(f._file))  # this handle's own error: no global state
            if code:
                reason = _libsndfile_reason(ffi.string(snd.sf_strerror(f._file)).decode("utf-8", "replace"))
                raise DataError(f"{path}: damaged audio stream ({reason}) after {n} samples")
        else:  # pragma: no cover - a soundfile without its cffi handle: one whole read
            try:
                k = f.buffer_read_into(buf, dtype="float32")
            except (sf.LibsndfileError, RuntimeError) as e:
                raise DataError(f"{path}: damaged audio stream "
                                f"({_libsndfile_reason(getattr(e, 'error_string', e))}) after {n} samples") from None
        if k <= 0:
            break
        if n + k > len(out):  # more than announced (or announced nothing): grow geometrically
            out = np.concatenate([out[:n], np.empty(max(len(out), k), np.float32)])
        block, dst = buf[:k], out[n:n + k]
        if float_pcm and not np.isfinite(block).all():
            raise DataError(f"{path}: holds NaN or infinite samples (after {n} samples)")
        if top is not None:
            np.minimum(block, top, out=block)
        if channels == 1:
            dst[:] = block[:, 0]
        else:  # mean of the channels, summed in float32 in channel order
            np.add(block[:, 0], block[:, 1], out=dst)
            for c in range(2, channels):
                dst += block[:, c]
            dst *= np.float32(1.0 / channels)
        n += k
    return out[:n] if n == len(out) else out[:n].copy()


_WAV_DATA_RE = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _check_wav_log(path: str, log: str) -> None:
    """A WAV whose data chunk is longer than the file was cut short; libsndfile reads what is there and
    only notes it in its log (``data : 1764000 (should be 1587595)``)."""
    m = _WAV_DATA_RE.search(log or "")
    if m:
        announced, present = int(m.group(1)), int(m.group(2))
        # 0 and 0xFFFFFFFF are the "length unknown" values of streaming writers, not truncation
        if present < announced and announced not in (0, 0xFFFFFFFF):
            raise DataError(f"{path}: truncated WAV: its data chunk announces {announced} bytes, "
                            f"the file holds {present}")
