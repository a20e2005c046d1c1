"""fileio (atomic writes, stale temp clean-up, safe readers) and cli (one error policy, exit codes)."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from cmir_tf import cli, fileio
from cmir_tf.errors import BusyError, ConfigError, DataError, ExportError, NonFiniteLossError, StorageError


def test_atomic_path_renames_on_success_and_removes_temp_on_failure(tmp_path):
    target = tmp_path / "w.weights.h5"
    with fileio.atomic_path(target) as tmp:
        assert tmp.endswith("w.weights.h5") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"new"  # the old version survives a failed write
    assert os.listdir(tmp_path) == ["w.weights.h5"]


def test_disk_full_is_a_storage_error_naming_the_destination(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match=r"out\.json: cannot write \(No space left on device\); free some space and rerun"):
        fileio.write_json(tmp_path / "out.json", {"a": 1})
    assert os.listdir(tmp_path) == []


def test_remove_stale_temps_removes_only_own_names_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".cmir-tmp-{dead_pid}-abcd1234-shard.tfrecord"
    live = tmp_path / f".cmir-tmp-{os.getpid()}-abcd1234-shard.tfrecord"
    users = [tmp_path / "notes.tmp", tmp_path / "x.tfrecord.tmp", tmp_path / ".cmir-tmp-notapid-x"]
    for p in [stale, live, *users]:
        p.write_bytes(b"x")
    assert fileio.remove_stale_temps(tmp_path) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [live, *users])


def test_read_json_turns_every_fault_into_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep\.json: not a usable song list \(JSON nested too deeply\)"):
        fileio.read_json(deep, "song list")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(DataError, match=r"bad\.json: manifest is not valid JSON"):
        fileio.read_json(bad, "manifest")
    with pytest.raises(DataError, match="is a folder"):
        fileio.read_json(tmp_path, "manifest")
    with pytest.raises(DataError, match="not found"):
        fileio.read_json(tmp_path / "none.json", "manifest")


def test_load_npy_never_unpickles_and_checks_rank_and_kind(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: word2vec holds Python objects \(pickled\); refused"):
        fileio.load_npy(tmp_path / "obj.npy", "word2vec")
    np.save(tmp_path / "v.npy", np.zeros(3, np.float32))
    with pytest.raises(DataError, match=r"shape \(3,\), expected 2 dimension"):
        fileio.load_npy(tmp_path / "v.npy", "word2vec", ndim=2)
    np.save(tmp_path / "i.npy", np.zeros((2, 2), np.int16))
    with pytest.raises(DataError, match="dtype int16, expected a float array"):
        fileio.load_npy(tmp_path / "i.npy", "word2vec")
    (tmp_path / "t.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"t\.npy: word2vec is not a \.npy file"):
        fileio.load_npy(tmp_path / "t.npy", "word2vec")


@pytest.mark.parametrize("exc, code", [
    (ConfigError("--mode: bad"), 2), (DataError("f.json: bad"), 2), (ExportError("x: bad"), 2),
    (StorageError("x: full"), 2), (NonFiniteLossError("run: nan at epoch 1, step 3"), 3),
    (BusyError("out: locked by pid 12"), 4), (OSError(errno.ENOSPC, "No space left on device", "/o/shard"), 2),
    (KeyboardInterrupt(), 130),
])
def test_cli_maps_errors_to_documented_exit_codes_with_one_line(exc, code, capsys):
    @cli.command
    def main(argv=None):
        raise exc

    assert main([]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    if code != 130:
        assert err[0].startswith("error: ")
    if isinstance(exc, OSError):
        assert err[0] == "error: /o/shard: cannot write (No space left on device); free some space and rerun the same command: it resumes"


def test_cli_lets_programming_errors_through():
    @cli.command
    def main(argv=None):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        main([])


def test_a_folder_where_an_output_file_goes_is_one_error_and_left_alone(tmp_path):
    from cmir_tf.errors import ConfigError
    from cmir_tf.fileio import atomic_write_text

    (tmp_path / "out.json" / "mine").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'out.json'}: is a folder, not a file; move it away"):
        atomic_write_text(tmp_path / "out.json", "{}")
    assert os.listdir(tmp_path) == ["out.json"] and os.listdir(tmp_path / "out.json") == ["mine"]
