"""melon.py: Melon paths, tolerant JSON readers, and a mel loader that refuses every fault by name."""
import json
import os
import pickle

import numpy as np
import pytest

from cmir_tf.data.melon import MelError, MelonLayout, inspect_mel, load_mel, read_genres, read_playlists, read_song_meta
from cmir_tf.errors import DataError


class _Evil:
    """Unpickling this creates ``marker`` — a stand-in for arbitrary code in a dataset file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _reason(path):
    with pytest.raises(MelError) as ei:
        load_mel(path)
    assert isinstance(ei.value, DataError)
    assert str(path) in str(ei.value) and ei.value.reason in str(ei.value)
    return ei.value.reason


def test_mel_path_layout(tmp_path):
    lay = MelonLayout(tmp_path)
    assert lay.mel_path(123456) == os.path.join(str(tmp_path), "arena_mel", "123", "123456.npy")
    assert lay.mel_path(7) == os.path.join(str(tmp_path), "arena_mel", "0", "7.npy")
    assert lay.playlists("val").endswith("val.json") and lay.song_meta.endswith("song_meta.json")
    with pytest.raises(DataError, match="song_meta.json"):
        lay.check()


def test_load_mel_is_time_major_float32(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(-40, 10, (48, 300)).astype(np.float32)
    np.save(tmp_path / "a.npy", m)
    got = load_mel(tmp_path / "a.npy")
    assert got.shape == (300, 48) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, m.T)
    np.save(tmp_path / "b.npy", m.astype(np.float64))  # other float widths are accepted and cast
    np.testing.assert_array_equal(load_mel(tmp_path / "b.npy"), m.T)
    assert inspect_mel(tmp_path / "a.npy") == 300


def test_exactly_256_frames_is_enough_255_is_too_short(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((48, 256), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((48, 255), np.float32))
    assert load_mel(tmp_path / "ok.npy").shape == (256, 48)
    assert _reason(tmp_path / "short.npy") == "too_short"


@pytest.mark.parametrize("kind", ["object_npy", "bare_pickle"])
def test_pickled_file_is_refused_and_never_executed(tmp_path, kind):
    probe, marker = tmp_path / "probe_marker", tmp_path / "marker"
    path = tmp_path / "song.npy"
    if kind == "object_npy":
        np.save(path, np.array([_Evil(str(marker)), 1], dtype=object), allow_pickle=True)
        # the payload is live: loading it with pickles allowed runs the code
        np.save(tmp_path / "probe.npy", np.array([_Evil(str(probe)), 1], dtype=object), allow_pickle=True)
        np.load(tmp_path / "probe.npy", allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(_Evil(str(marker))))
        pickle.loads(pickle.dumps(_Evil(str(probe))))
    assert probe.exists()
    assert _reason(path) == "pickled"
    with pytest.raises(MelError):
        inspect_mel(path)
    assert not marker.exists()


def test_every_fault_has_its_reason(tmp_path):
    good = np.random.default_rng(1).normal(-40, 5, (48, 400)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    raw = (tmp_path / "good.npy").read_bytes()
    cases = {}
    cases["missing"] = tmp_path / "nope.npy"
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) - 100]); cases["trunc"] = tmp_path / "trunc.npy"
    (tmp_path / "empty.npy").write_bytes(b""); cases["empty"] = tmp_path / "empty.npy"
    (tmp_path / "garbage.npy").write_bytes(b"GARBAGE!" * 128)
    cases["garbage"] = tmp_path / "garbage.npy"
    bad_head = bytearray(raw); bad_head[10:40] = b"{'descr': <garbage>, 'shape': ("
    (tmp_path / "head.npy").write_bytes(bytes(bad_head)); cases["head"] = tmp_path / "head.npy"
    (tmp_path / "dir.npy").mkdir(); cases["dir"] = tmp_path / "dir.npy"
    np.save(tmp_path / "int.npy", good.astype(np.int16)); cases["int"] = tmp_path / "int.npy"
    np.save(tmp_path / "cplx.npy", good.astype(np.complex64)); cases["cplx"] = tmp_path / "cplx.npy"
    np.save(tmp_path / "flat.npy", good.ravel()); cases["flat"] = tmp_path / "flat.npy"
    np.save(tmp_path / "cube.npy", good[None]); cases["cube"] = tmp_path / "cube.npy"
    np.save(tmp_path / "bands.npy", good[:40]); cases["bands"] = tmp_path / "bands.npy"
    np.save(tmp_path / "transposed.npy", good.T); cases["transposed"] = tmp_path / "transposed.npy"
    np.savez(tmp_path / "arch.npz", a=good); os.replace(tmp_path / "arch.npz", tmp_path / "arch.npy")
    cases["npz"] = tmp_path / "arch.npy"
    for name, bad in (("inf", np.inf), ("ninf", -np.inf), ("nan", np.nan)):
        m = good.copy(); m[3, 7] = bad; np.save(tmp_path / f"{name}.npy", m); cases[name] = tmp_path / f"{name}.npy"
    expected = {"missing": "missing", "trunc": "unreadable", "empty": "unreadable", "garbage": "unreadable",
                "head": "unreadable", "dir": "not_a_file", "int": "bad_dtype", "cplx": "bad_dtype",
                "flat": "bad_shape", "cube": "bad_shape", "bands": "wrong_bands", "transposed": "wrong_bands",
                "npz": "unreadable", "inf": "non_finite", "ninf": "non_finite", "nan": "non_finite"}
    got = {k: _reason(p) for k, p in cases.items()}
    assert got == expected
    np.testing.assert_array_equal(load_mel(tmp_path / "good.npy"), good.T)


def test_read_song_meta_keeps_first_duplicate_and_defaults_missing_fields(tmp_path):
    meta = [
        {"id": 1, "song_gn_gnr_basket": ["GN0100"], "song_gn_dtl_gnr_basket": ["GN0101", "GN0100"],
         "song_name": "a", "artist_id_basket": [3], "issue_date": "20200101", "album_id": 9},
        {"id": 2},  # every optional field missing
        {"id": 1, "song_gn_gnr_basket": ["GN0200"], "song_gn_dtl_gnr_basket": []},
        {"id": "3", "song_gn_gnr_basket": None, "song_gn_dtl_gnr_basket": ["GN0301"]},
    ]
    (tmp_path / "song_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    songs, dup = read_song_meta(tmp_path / "song_meta.json")
    assert dup == 1 and sorted(songs) == [1, 2, 3]
    assert songs[1].genres == ["GN0100", "GN0101"] and songs[1].song_name == "a" and songs[1].album_id == 9
    assert songs[2].genres == [] and songs[2].artist_name_basket == [] and songs[2].issue_date == ""
    assert songs[3].genres == ["GN0301"]
    (tmp_path / "bad.json").write_text("[{\"id\": 1,", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json"):
        read_song_meta(tmp_path / "bad.json")
    (tmp_path / "noid.json").write_text("[{\"song_name\": \"x\"}]", encoding="utf-8")
    with pytest.raises(DataError, match="noid.json.*entry 0"):
        read_song_meta(tmp_path / "noid.json")


def test_read_playlists_and_genres_tolerate_masked_fields(tmp_path):
    pls = [{"id": 5, "plylst_title": "t", "tags": ["x"], "songs": [3, 4], "like_cnt": 2, "updt_date": "d"},
           {"id": 6, "songs": ["7"]}, {"id": 8}]
    (tmp_path / "val.json").write_text(json.dumps(pls), encoding="utf-8")
    got = read_playlists(tmp_path / "val.json")
    assert [p["songs"] for p in got] == [[3, 4], [7], []]
    assert got[1]["tags"] == [] and got[1]["plylst_title"] == "" and got[2]["like_cnt"] == 0
    (tmp_path / "genre_gn_all.json").write_text(json.dumps({"GN0100": "발라드", "GN0101": "세부"}),
                                                encoding="utf-8")
    assert read_genres(tmp_path / "genre_gn_all.json") == {"GN0100": "발라드", "GN0101": "세부"}
    with pytest.raises(DataError, match="missing.json"):
        read_playlists(tmp_path / "missing.json")


def test_atomic_writes_leave_no_temp_file_and_usual_permissions(tmp_path):
    from cmir_tf.fileio import save_npy, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "sub" / "a.json", {"k": "발라드"})
        save_npy(tmp_path / "b.npy", np.arange(3, dtype=np.float32))
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "sub" / "a.json").read_text(encoding="utf-8")) == {"k": "발라드"}
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy", allow_pickle=False), [0, 1, 2])
    assert sorted(os.listdir(tmp_path)) == ["b.npy", "sub"] and os.listdir(tmp_path / "sub") == ["a.json"]
    assert (os.stat(tmp_path / "b.npy").st_mode & 0o777) == 0o644
