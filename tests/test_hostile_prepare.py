"""python -m cmir_tf.prepare on hostile folders: every fault a user met is one line (or a skip), never a
traceback, a hang, a write outside --out, a deleted user file or a silently wrong result."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmir_tf.data.melon import MelError, MelonLayout, inspect_mel, load_mel
from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import DataError
from cmir_tf.prepare import main, prepare
from cmir_tf.synth import make_synthetic_melon

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(cf_dim=4, w2v_dim=4, cf_iterations=2, shard_size=8, progress=False, verbose=False)
FLAGS = ["--cf-dim", "4", "--w2v-dim", "4", "--cf-iterations", "2", "--shard-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def melon(tmp_path_factory):
    """A small synthetic Melon folder with mels (30 songs). Read-only: copy it to damage it."""
    root = tmp_path_factory.mktemp("hostile_small_melon")
    make_synthetic_melon(root, songs=30, playlists=15, seed=2)
    return root


@pytest.fixture(scope="module")
def prepared(melon, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile_small_prepared") / "p"
    prepare(melon, out, **SMALL)
    return out


def _run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _metadata_melon(tmp_path, edit):
    """A tiny JSON-only Melon folder, with ``edit(song_meta, {split: playlists})`` applied."""
    root = tmp_path / "m"
    make_synthetic_melon(root, songs=20, playlists=10, seed=1, mels=False)
    meta = json.loads((root / "song_meta.json").read_text())
    pls = {s: json.loads((root / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    edit(meta, pls)
    (root / "song_meta.json").write_text(json.dumps(meta))
    for s, p in pls.items():
        (root / f"{s}.json").write_text(json.dumps(p))
    return root


# -------------------------------------------------------------------------------------- §2 paths
@pytest.mark.parametrize("entry", ["ABS", "../outside.tfrecord", "../../outside.tfrecord", "train/../../o.tfrecord"])
def test_manifest_shard_outside_the_folder_is_refused(prepared, tmp_path, entry):
    data = PreparedData(shutil.copytree(prepared, tmp_path / "p"))
    outside = tmp_path / "outside.tfrecord"
    shutil.copy(data.shard_files("train")[0], outside)
    manifest = data.read_manifest()
    manifest["shards"]["train"][0] = str(outside) if entry == "ABS" else entry
    Path(data.manifest_path).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: .*train.*\.tfrecord'.* outside "):
        data.shard_files("train")


def test_plan_shard_name_outside_the_folder_is_refused_and_nothing_written_outside(prepared, tmp_path, melon,
                                                                                    capsys):
    work = tmp_path / "a" / "b" / "c"
    out = shutil.copytree(prepared, work / "p")
    data = PreparedData(out)
    plan = json.loads(Path(data.plan_path).read_text())
    first = plan["shards"]["train"][0]["name"]
    os.unlink(data.done_path(first))
    os.unlink(data.manifest_path)
    plan["shards"]["train"][0]["name"] = "../../../x.tfrecord"
    Path(data.plan_path).write_text(json.dumps(plan))
    before = sorted(p for p in tmp_path.rglob("*"))
    code, err = _run_cli(["--melon", str(melon), "--out", str(out), "--seed", "0", *FLAGS], capsys)
    line = _one_error_line(err)
    assert code == 2
    assert "plan.json" in line and "'../../../x.tfrecord'" in line and "outside" in line
    assert not list(tmp_path.rglob("x.tfrecord*"))
    assert sorted(p for p in tmp_path.rglob("*")) == before


# ----------------------------------------------------------------------------- §3 nothing deleted
def test_overwrite_and_rerun_delete_only_what_prepare_wrote(melon, tmp_path):
    out = tmp_path / "p"
    prepare(melon, out, **SMALL)
    mine = {out / "train" / "notes.txt": b"mine", out / "train" / "draft.tmp": b"my temp",
            out / "val" / "other.tfrecord": b"another tool's shard", out / "README": b"read me"}
    for path, data in mine.items():
        path.write_bytes(data)
    prepare(melon, out, **SMALL)  # a plain rerun
    assert all(p.read_bytes() == d for p, d in mine.items())
    manifest = prepare(melon, out, seed=1, overwrite=True, **SMALL)
    assert all(p.read_bytes() == d for p, d in mine.items())
    assert manifest["params"]["seed"] == 1
    assert os.path.basename(PreparedData(out).shard_files("val")[0]) != "other.tfrecord"


def test_out_folder_of_other_files_is_refused(melon, tmp_path, capsys):
    out = tmp_path / "mydocs"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "train").mkdir()
    (out / "train" / "data.csv").write_text("1,2")
    for extra in ([], ["--overwrite"]):
        code, err = _run_cli(["--melon", str(melon), "--out", str(out), *FLAGS, *extra], capsys)
        line = _one_error_line(err)
        assert code == 2 and str(out) in line and "not a prepared folder" in line
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "train" / "data.csv").exists()
    assert sorted(os.listdir(out)) == ["thesis.tex", "train"]


def test_out_that_is_a_file_is_one_line(melon, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    code, err = _run_cli(["--melon", str(melon), "--out", str(out), *FLAGS], capsys)
    line = _one_error_line(err)
    assert code == 2 and f"{out}: exists and is not a folder" in line


# --------------------------------------------------------------------------- §4 two runs, one folder
PAUSED = """
import os, sys, time
from cmir_tf import shard_writer
real = shard_writer.write_shard
def paused(task):
    open(sys.argv[2], "w").close()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.1)
    return real(task)
shard_writer.write_shard = paused
from cmir_tf.prepare import main
sys.exit(main(["--melon", sys.argv[1], "--out", sys.argv[4], "--cf-dim", "4", "--w2v-dim", "4",
               "--cf-iterations", "2", "--shard-size", "8", "--no-progress"]))
"""


@pytest.mark.slow
def test_second_prepare_into_the_same_folder_is_refused_and_the_first_finishes(melon, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    out, started, go = tmp_path / "p", tmp_path / "started", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", PAUSED, str(melon), str(started), str(go), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not started.exists():
            assert first.poll() is None and time.time() < deadline, "the first prepare never reached its shards"
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "cmir_tf.prepare", "--melon", str(melon), "--out", str(out),
                                 *FLAGS], env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 4, second.stderr
        line = _one_error_line(second.stderr)
        assert f"{out}: in use by process {first.pid}" in line
        go.touch()
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert PreparedData(out).is_complete()
    assert sum(PreparedData(out).check_trainable()["counts"].values()) > 0


# ------------------------------------------------------------------------------ §5 silent results
def test_a_flipped_byte_in_a_finished_shard_is_found_and_the_shard_rewritten(melon, prepared, tmp_path):
    out = shutil.copytree(prepared, tmp_path / "p")
    data = PreparedData(out)
    victim, other = data.shard_files("train")[:2]
    good = Path(victim).read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x10
    Path(victim).write_bytes(bytes(damaged))
    other_stat = os.stat(other)
    prepare(melon, out, **SMALL)
    assert Path(victim).read_bytes() == good
    assert os.stat(other).st_ino == other_stat.st_ino and os.stat(other).st_mtime_ns == other_stat.st_mtime_ns


@pytest.mark.parametrize("fault", [
    "song_id_fraction", "song_id_true", "song_id_text", "song_id_infinity", "song_id_1e30", "song_id_2_63_plus_5",
    "playlist_id_text", "playlist_song_fraction", "playlist_song_true", "playlist_songs_int", "tags_int",
    "like_cnt_text", "genres_int", "song_meta_nested", "playlists_nested", "album_id_text",
    "artist_ids_int"])
def test_bad_ids_and_types_are_one_line_naming_file_and_entry(tmp_path, capsys, fault):
    def edit(meta, pls):
        song, pl = meta[3], pls["train"][2]
        if fault == "song_id_fraction":
            meta[1]["id"] = 0.9  # int() would make it song 0 again: a silent duplicate
        elif fault == "song_id_true":
            meta[3]["id"] = True
        elif fault == "song_id_text":
            song["id"] = "abc"
        elif fault == "song_id_infinity":
            song["id"] = float("inf")
        elif fault == "song_id_1e30":
            song["id"] = 10 ** 30
        elif fault == "song_id_2_63_plus_5":
            song["id"] = 2 ** 63 + 5
        elif fault == "playlist_id_text":
            pl["id"] = "abc"
        elif fault == "playlist_song_fraction":
            pl["songs"][0] = 0.9
        elif fault == "playlist_song_true":
            pl["songs"][0] = True
        elif fault == "playlist_songs_int":
            pl["songs"] = 5
        elif fault == "tags_int":
            pl["tags"] = 5
        elif fault == "like_cnt_text":
            pl["like_cnt"] = "lots"
        elif fault == "genres_int":
            song["song_gn_gnr_basket"] = 5
        elif fault == "album_id_text":
            song["album_id"] = "abc"
        elif fault == "artist_ids_int":
            song["artist_id_basket"] = 7
    root = _metadata_melon(tmp_path, edit)
    if fault.endswith("nested"):
        name = "song_meta.json" if fault.startswith("song_meta") else "train.json"
        (root / name).write_text("[" * 100_000 + "]" * 100_000)
    code, err = _run_cli(["--melon", str(root), "--out", str(tmp_path / "out"), "--metadata-only", *FLAGS], capsys)
    line = _one_error_line(err)
    assert code == 2
    if fault.startswith(("song_id", "genres", "album", "artist", "song_meta")):
        assert "song_meta.json" in line
    else:
        assert "train.json" in line
    if not fault.endswith("nested"):
        assert ("entry 1" if fault == "song_id_fraction" else "entry 3" if fault.startswith(("song_id", "genres", "album", "artist"))
                else "playlist 2") in line


@pytest.mark.parametrize("bad", [0.9, True, "7", None])
def test_split_lists_hold_integer_song_ids_only(prepared, tmp_path, bad):
    data = PreparedData(shutil.copytree(prepared, tmp_path / "p"))
    splits = json.loads(Path(data.splits_path).read_text())
    splits["val"].append(bad)
    Path(data.splits_path).write_text(json.dumps(splits))
    with pytest.raises(DataError, match=rf"splits\.json: song ids must be integers, val holds {re.escape(repr(bad))}"):
        data.read_splits()


@pytest.mark.parametrize("how", ["no_playlists", "empty_playlists"])
def test_no_song_in_any_playlist_is_one_line(tmp_path, capsys, how):
    def edit(meta, pls):
        for s in pls:
            pls[s] = [] if how == "no_playlists" else [dict(p, songs=[]) for p in pls[s]]
    root = _metadata_melon(tmp_path, edit)
    code, err = _run_cli(["--melon", str(root), "--out", str(tmp_path / "out"), "--metadata-only", *FLAGS], capsys)
    line = _one_error_line(err)
    assert code == 2 and str(root) in line and "no song" in line and "playlist" in line


# --------------------------------------------------------------------------------- §7 disk, FIFOs
def test_disk_full_while_writing_a_shard_names_it_and_a_rerun_resumes(melon, tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    real_writer, calls = tf.io.TFRecordWriter, []

    class FullDisk(real_writer):
        def write(self, record):
            calls.append(1)
            if len(calls) > 20:  # TensorFlow's own error for ENOSPC (checked by writing to /dev/full)
                raise tf.errors.ResourceExhaustedError(None, None, f"{self._path}; No space left on device")
            super().write(record)

        def __init__(self, path, options=None):
            self._path = path
            super().__init__(path, options)

    out = tmp_path / "p"
    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
    code, err = _run_cli(["--melon", str(melon), "--out", str(out), *FLAGS], capsys)
    line = _one_error_line(err)
    assert code == 2
    assert f"{out}/train/train-00002-of-" in line and "No space left on device" in line and "rerun" in line
    assert not [n for s in ("train", "val", "test") if (out / s).is_dir() for n in os.listdir(out / s)
                if n.startswith(".")]  # no partial left behind
    monkeypatch.setattr(tf.io, "TFRecordWriter", real_writer)
    assert main(["--melon", str(melon), "--out", str(out), *FLAGS]) == 0
    capsys.readouterr()
    assert PreparedData(out).is_complete()


def test_disk_full_on_a_real_tiny_filesystem_then_freed_resumes(melon, tmp_path, capsys):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = _run_cli(["--melon", str(melon), "--out", str(mnt / "p"), *FLAGS], capsys)
        line = _one_error_line(err)
        assert code == 2 and f"{mnt}/p/" in line and "No space left on device" in line and "rerun" in line
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        assert main(["--melon", str(melon), "--out", str(mnt / "p"), *FLAGS]) == 0
        assert PreparedData(mnt / "p").is_complete()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_fifo_in_arena_mel_is_skipped_as_not_a_file_without_opening_it(melon, tmp_path):
    root = shutil.copytree(melon, tmp_path / "m")
    layout = MelonLayout(root)
    sid = json.loads((root / "train.json").read_text())[0]["songs"][0]
    fifo = layout.mel_path(sid)
    os.unlink(fifo)
    os.mkfifo(fifo)
    signal.alarm(60)  # opening a FIFO for reading would block for ever
    try:
        with pytest.raises(MelError) as info:
            inspect_mel(fifo)
        assert info.value.reason == "not_a_file"
        with pytest.raises(MelError, match="not_a_file"):
            load_mel(fifo)
        manifest = prepare(root, tmp_path / "p", **SMALL)
    finally:
        signal.alarm(0)
    assert {"song_id": sid, "reason": "not_a_file"} in manifest["skipped"]


def test_temp_files_of_a_killed_run_are_removed_from_every_folder_it_writes(prepared, melon, tmp_path):
    out = shutil.copytree(prepared, tmp_path / "p")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [out / sub / f".cmir-tmp-{int(dead.stdout)}-0123abcd-{name}" for sub, name in
             (("train", "train-00000-of-00003.tfrecord"), (".prepare", "plan.json"), (".prepare/done", "x.json"),
              (".", "manifest.json"))]
    for path in stale:
        path.write_bytes(b"half")
    prepare(melon, out, **SMALL)
    assert not [p for p in stale if p.exists()]


@pytest.mark.parametrize("name", ["records", "genre"])
def test_pair_file_that_is_a_folder_on_a_rerun_is_one_line(prepared, tmp_path, capsys, melon, name):
    """Issue 16: pairs/train/records.npy being a folder gave a traceback when prepare reran."""
    out = Path(shutil.copytree(prepared, tmp_path / "p"))
    victim = Path(PreparedData(out).pair_path("train", name))
    victim.unlink()
    victim.mkdir()
    (victim / "mine.txt").write_text("mine")
    code, err = _run_cli(["--melon", str(melon), "--out", str(out), *FLAGS], capsys)
    assert code == 2 and _one_error_line(err) == f"error: {victim}: is a folder, not a file; move it away and rerun"
    assert (victim / "mine.txt").read_text() == "mine"
