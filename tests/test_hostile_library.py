"""A hostile music library: every bad file costs one line on stderr and its own song, never the run.

Made here: an empty file, a text file named ``.mp3``, a truncated Ogg, a bit-flipped FLAC, an mp3
whose ID3 header is damaged, a huge tag, a track shorter than one patch, the same bytes twice, a FIFO,
a symbolic-link loop, a dangling link, a file name that is not UTF-8, and a playlist entry climbing out
of the library with ``..``. Unreadable permissions are tested only when not running as root: root
reads a ``chmod 000`` file anyway (the CI runs as root), so there that case cannot be made.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
from library_data import tag, write_audio


def _hostile_library(root) -> dict:
    lib = root / "lib"
    good = {}
    for i, fmt in enumerate(("ogg", "flac", "mp3", "ogg", "flac")):
        p = write_audio(lib / "Ann" / "First" / f"{i:02d}.{fmt}", 220 + 40 * i, seed=i)
        tag(p, genre="Rock", artist="Ann")
        good[f"Ann/First/{i:02d}.{fmt}"] = p
    bad = lib / "Bad"
    bad.mkdir()
    (bad / "empty.mp3").write_bytes(b"")
    (bad / "text.mp3").write_text("not music at all\n" * 20)
    raw = open(write_audio(root / "t.ogg", 300), "rb").read()
    (bad / "truncated.ogg").write_bytes(raw[: len(raw) // 2])
    raw = bytearray(open(write_audio(root / "f.flac", 300), "rb").read())
    raw[len(raw) // 2: len(raw) // 2 + 40] = bytes(b ^ 0xFF for b in raw[len(raw) // 2: len(raw) // 2 + 40])
    (bad / "flipped.flac").write_bytes(bytes(raw))
    (bad / "badtag.mp3").write_bytes(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + open(write_audio(root / "m.mp3", 300), "rb").read())
    tag(write_audio(bad / "short.ogg", 300, seconds=2.0), genre="Rock")
    shutil.copy(good["Ann/First/00.ogg"], bad / "copy.ogg")
    os.mkfifo(bad / "fifo.wav")
    os.symlink("loop.ogg", bad / "loop.ogg")
    os.symlink("nowhere.ogg", bad / "dangling.ogg")
    huge = write_audio(lib / "Ann" / "First" / "huge.ogg", 700, seed=9)
    tag(huge, genre=["Rock", "x" * 2_000_000])
    weird = os.path.join(os.fsencode(lib / "Ann" / "First"), b"caf\xe9.flac")
    shutil.copy(write_audio(root / "w.flac", 800, seed=11), weird)
    tag(weird, genre="Rock")
    write_audio(root / "outside.ogg", 900)
    (lib / "all.m3u").write_bytes(b"\n".join([*(k.encode() for k in good), b"Ann/First/huge.ogg", b"Ann/First/caf\xe9.flac",
                                              b"Bad/text.mp3", b"Bad/truncated.ogg", b"Bad/flipped.flac",
                                              b"Bad/badtag.mp3", b"Bad/short.ogg", b"../outside.ogg"]) + b"\n")
    if os.geteuid() != 0:
        locked = write_audio(bad / "locked.ogg", 300)
        os.chmod(locked, 0)
    return good


def _listing(folder) -> dict:
    return {os.path.join(d, n): os.lstat(os.path.join(d, n)).st_mtime_ns
            for d, _, names in os.walk(folder) for n in names}


def test_hostile_library_one_line_per_bad_file_and_the_rest_prepared(tmp_path):
    good = _hostile_library(tmp_path)
    before = _listing(tmp_path / "lib")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cmir_tf.prepare", "--library", str(tmp_path / "lib"),
                           "--out", str(tmp_path / "data"), "--no-progress", "--ignore-genres"],
                          capture_output=True, timeout=300, env=env)  # a hang fails here
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "/lib/" in ln]
    expected = {"empty.mp3": "skipped (empty)", "fifo.wav": "skipped (not_a_file)",
                "loop.ogg": "skipped (link_loop)", "dangling.ogg": "skipped (missing)",
                "copy.ogg": "skipped (duplicate of Ann/First/00.ogg)", "text.mp3": "skipped (undecodable",
                "truncated.ogg": "skipped (undecodable", "flipped.flac": "skipped (undecodable",
                "badtag.mp3": "bad_tags", "short.ogg": "skipped (too_short"}
    for name, what in expected.items():
        mine = [ln for ln in lines if f"/Bad/{name}:" in ln and what in ln]
        assert len(mine) == 1, (name, lines)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    lib = manifest["library"]
    assert lib["files_skipped"] == {"duplicate": 1, "empty": 1, "link_loop": 1, "missing": 1, "not_a_file": 1,
                                    **({} if os.geteuid() == 0 else {"unreadable": 1})}
    assert lib["playlist_files"]["entries_skipped"] == {"outside": 1}
    ids = {e["path"]: e["id"] for e in json.loads((tmp_path / "data" / "library_ids.json").read_text())["songs"]}
    weird = os.fsdecode(b"Ann/First/caf\xe9.flac")
    written = set(json.loads((tmp_path / "data" / "splits.json").read_text())["train"]) | {
        s for k in ("val", "test") for s in json.loads((tmp_path / "data" / "splits.json").read_text())[k]}
    assert written == {ids[p] for p in [*good, "Ann/First/huge.ogg", weird]}
    assert manifest["skipped_by_reason"] == {"too_short": 1, "undecodable": 4}
    assert _listing(tmp_path / "lib") == before  # nothing written into the library
