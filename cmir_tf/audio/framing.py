"""Container framing checks run before libsndfile decodes an mp3 or an Ogg file (see ``cmir_tf.audio.decoding``).

mpg123 (inside libsndfile) prints its own diagnostics to stderr on a broken MPEG stream and conceals
damage, and libsndfile hides an Ogg file's missing end; so before decoding, the file's framing is read
here and a broken file becomes one :class:`~cmir_tf.errors.DataError` line:

* :func:`check_mpeg` — skip an ID3v2 tag, find the first MPEG audio frame within the 64 KiB mpg123
  searches, read a Xing/Info header's frame count, then walk the chain of frame headers to the end of
  the stream (tolerating what mpg123 tolerates: trailing ID3v1/APE tags, junk after the last frame).
* :func:`check_ogg` — the last Ogg page's granule position (the stream's length in samples) and the
  codec (Vorbis, Opus) of the first page.
* :func:`ogg_damage` — every Ogg page's CRC and sequence number, to tell a damaged file from an intact
  one whose decoded length falls a little short of its last granule position (see ``cmir_tf.audio.decoding``).

What no framing check can see (a flipped bit inside PCM or inside mp3 audio data) is listed in
docs/AUDIO.md.
"""
from __future__ import annotations

import functools
import zlib

from cmir_tf.errors import DataError

MAX_MPEG_JUNK = 65536  # bytes mpg123 searches for a first frame before giving up (and so do we)
OGG_MAX_PAGE = 27 + 255 + 255 * 255  # largest possible Ogg page


# ---------------------------------------------------------------------------------------------
# MPEG audio framing (mp3, also layers I/II): checked before mpg123 sees the stream
# ---------------------------------------------------------------------------------------------
_MPEG_KBPS = {  # (MPEG-1?, layer) → bitrate (kbit/s) for indices 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version id


@functools.lru_cache(maxsize=4096)  # a stream has few distinct headers; the walk looks each one up
def mpeg_header(b: bytes):
    """A 4-byte MPEG audio frame header → (stream key, frame bytes or None, padding bytes), None if invalid.

    Frame bytes are None for a free-format stream (bitrate index 0: the length is not in the header).
    The key (version, layer, sample rate, mono?, free format?) must stay the same along a stream
    (libsndfile sets mpg123's NO_FRANKENSTEIN flag: a change of format ends decoding).
    """
    if len(b) < 4:
        return None
    h = int.from_bytes(b[:4], "big")
    if h >> 21 != 0x7FF:
        return None
    version, layer_bits, bitrate_i, rate_i = (h >> 19) & 3, (h >> 17) & 3, (h >> 12) & 15, (h >> 10) & 3
    if version == 1 or layer_bits == 0 or bitrate_i == 15 or rate_i == 3:
        return None
    layer, mono = 4 - layer_bits, ((h >> 6) & 3) == 3
    padding = ((h >> 9) & 1) * (4 if layer == 1 else 1)
    rate = _MPEG_RATES[version][rate_i]
    key = (version, layer, rate, mono, bitrate_i == 0)
    if bitrate_i == 0:
        return key, None, padding
    bps = _MPEG_KBPS[(version == 3, layer)][bitrate_i - 1] * 1000
    if layer == 1:
        size = 12 * bps // rate * 4
    elif layer == 3 and version != 3:
        size = 72 * bps // rate  # MPEG-2/2.5 layer III: 576 samples per frame
    else:
        size = 144 * bps // rate
    return key, size + padding, padding


def _id3v2_end(data) -> int:
    p = 0
    while data[p:p + 3] == b"ID3" and len(data) >= p + 10:
        size = (data[p + 6] & 0x7F) << 21 | (data[p + 7] & 0x7F) << 14 | (data[p + 8] & 0x7F) << 7 | (data[p + 9] & 0x7F)
        p += 10 + size + (10 if data[p + 5] & 0x10 else 0)  # + footer
    return p


def _xing_frames(frame: bytes, key) -> int | None:
    """Audio frames announced by a Xing/Info (LAME) header in the stream's first frame, if any."""
    version, layer, _, mono, _ = key
    if layer != 3:
        return None
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    for at in (4 + side, 4 + side + 2):  # + 2 when the frame has a CRC
        tag = frame[at:at + 12]
        if tag[:4] in (b"Xing", b"Info"):
            flags = int.from_bytes(tag[4:8], "big")
            return int.from_bytes(tag[8:12], "big") if flags & 1 else None
    return None


_MAX_FREE_FRAME = 8192  # bytes: a free-format frame's length is found by looking this far for the next header


def _first_mpeg_frame(data, start: int):
    """The first frame mpg123 would lock onto → (offset, key, frame bytes without padding for free
    format or None); a header counts only if a header of the same stream follows it."""
    p, stop = start - 1, min(len(data) - 3, start + MAX_MPEG_JUNK)
    while True:
        p = data.find(b"\xff", p + 1, stop)
        if p < 0:
            return None
        h = mpeg_header(data[p:p + 4])
        if h is None:
            continue
        key, size, padding = h
        if size is None:  # free format: the next header of this stream gives the length
            q = data.find(data[p:p + 2], p + 4, p + _MAX_FREE_FRAME)
            while q >= 0:
                nxt = mpeg_header(data[q:q + 4])
                if nxt is not None and nxt[0] == key:
                    return p, key, q - p - padding
                q = data.find(data[p:p + 2], q + 1, p + _MAX_FREE_FRAME)
            continue
        nxt = mpeg_header(data[p + size:p + size + 4])
        if p + size == len(data) or (nxt is not None and nxt[0] == key):
            return p, key, None


def check_mpeg(path: str, data):
    """Walk the MPEG frame chain; raise DataError where mpg123 would have to resync or would run dry.

    Returns (first byte, end byte, frames a Xing/Info header announces or None, audio frames, samples
    per frame): the bytes libsndfile is given are exactly the stream's frames, tags and junk left out.

    Accepted as mpg123 accepts them silently: ID3v2 tags, up to 64 KiB of junk or zeros before the
    first frame, anything after the frames a Xing/Info header announces (ID3v1, APE tags, junk), and
    tags or zeros after the last frame of a stream without that header.
    """
    start = _id3v2_end(data)
    if start > len(data):
        raise DataError(f"{path}: damaged or truncated (its ID3v2 tags claim {start} bytes, the file has "
                        f"{len(data)})")
    found = _first_mpeg_frame(data, start)
    if found is None:
        raise DataError(f"{path}: not an MPEG audio stream (no frame header in its first "
                        f"{min(len(data) - start, MAX_MPEG_JUNK)} bytes)")
    p, key, free_size = found
    first = p
    h = mpeg_header(data[p:p + 4])
    first_size = h[1] if h[1] is not None else free_size + h[2]
    limit = _xing_frames(data[p:p + first_size], key)  # frames announced after it (it holds no audio)
    if limit is not None:
        p += first_size
    count = 0
    while limit is None or count < limit:
        if p >= len(data):
            if limit is None:
                break
            raise DataError(f"{path}: truncated mp3: its Xing/Info header announces {limit} frames, "
                            f"the file ends after {count}")
        h = mpeg_header(data[p:p + 4])
        if h is None or h[0] != key:
            if limit is None and count and _mpeg_tail_ok(data[p:]):
                break
            what = "a frame of another format" if h is not None else "no frame header"
            raise DataError(f"{path}: damaged MPEG stream: {what} at byte {p} (after frame {count})")
        size = h[1] if h[1] is not None else free_size + h[2]
        if p + size > len(data):
            raise DataError(f"{path}: truncated mp3: frame {count} at byte {p} needs {size} bytes, "
                            f"{len(data) - p} are left")
        p += size
        count += 1
    if count == 0:
        raise DataError(f"{path}: no audio frames in the MPEG stream")
    version, layer = key[0], key[1]
    spf = 384 if layer == 1 else (576 if layer == 3 and version != 3 else 1152)
    return first, p, limit, count, spf


def _mpeg_tail_ok(tail: bytes) -> bool:
    """What may follow the last MPEG frame without mpg123 complaining: tags, or zero padding."""
    if not tail.strip(b"\0"):
        return True
    return tail[:3] == b"TAG" or tail[:8] == b"APETAGEX" or tail[:6] == b"LYRICS" or tail[:3] == b"ID3"


# ---------------------------------------------------------------------------------------------
# Ogg: libvorbisfile reads a truncated file to its last complete page and says nothing
# ---------------------------------------------------------------------------------------------
def check_ogg(path: str, head: bytes, tail: bytes):
    """Check that the file ends with a complete end-of-stream page → (codec, samples it announces).

    A Vorbis stream's last granule position is its sample count; an Opus stream's is its count at
    48 kHz plus the pre-skip of its OpusHead. A page whose CRC fails is dropped by libogg, so the
    decoded length then falls short of this: the check finds damage anywhere in the file.
    Other codecs: (None, None).
    """
    at = tail.rfind(b"OggS")
    while at >= 0:
        page = tail[at:]
        if len(page) >= 27 and page[4] == 0 and len(page) >= 27 + page[26]:
            n_seg = page[26]
            length = 27 + n_seg + sum(page[27:27 + n_seg])
            if length == len(page):
                break
        at = tail.rfind(b"OggS", 0, at)
    if at < 0:
        raise DataError(f"{path}: truncated Ogg file: it does not end with a complete Ogg page")
    page = tail[at:]
    if not page[5] & 0x04:
        raise DataError(f"{path}: truncated Ogg file: its last page is not an end-of-stream page")
    granule = int.from_bytes(page[6:14], "little", signed=True)
    # the first packet (after the first page's 27-byte header and segment table) names the codec
    first_packet = head[27 + head[26]:] if len(head) >= 27 else b""
    if first_packet[:7] == b"\x01vorbis" and granule >= 0:
        return "vorbis", granule
    if first_packet[:8] == b"OpusHead" and len(first_packet) >= 12 and granule >= 0:
        return "opus", granule - int.from_bytes(first_packet[10:12], "little")
    return None, None


# Ogg's CRC-32 is the unreflected polynomial 0x04C11DB7 with initial value 0 and no final xor (RFC 3533):
# zlib's reflected CRC-32 of the bit-reversed bytes, its own pre/post inversion undone, bit-reversed.
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(page: bytes) -> int:
    """The Ogg CRC of ``page`` (its CRC field must be zeroed by the caller)."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def ogg_damage(data: bytes) -> str | None:
    """Walk every page of a whole Ogg file → None if each page is complete, passes its CRC and follows
    the previous page of its stream in sequence; else the first fault, e.g. ``"page 12 at byte 48213
    fails its CRC"``. libogg drops a page that fails its CRC without a word, so this is what tells lost
    audio from a short final granule."""
    at, page_no, next_seq = 0, 0, {}
    while at < len(data):
        head = data[at:at + 27]
        if len(head) < 27 or head[:4] != b"OggS":
            return f"no Ogg page at byte {at} (after page {page_no - 1})"
        n_seg = head[26]
        length = 27 + n_seg + sum(data[at + 27:at + 27 + n_seg])
        page = data[at:at + length]
        if len(page) < length:
            return f"page {page_no} at byte {at} is incomplete"
        crc = int.from_bytes(page[22:26], "little")
        if ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) != crc:
            return f"page {page_no} at byte {at} fails its CRC"
        serial, seq = int.from_bytes(page[14:18], "little"), int.from_bytes(page[18:22], "little")
        if next_seq.get(serial, seq) != seq:
            return f"page {page_no} at byte {at} has sequence number {seq}, expected {next_seq[serial]} (pages lost)"
        next_seq[serial] = seq + 1
        at, page_no = at + length, page_no + 1
    return None
