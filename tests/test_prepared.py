"""PreparedData: the prepared folder's one owner — round trip with prepare's output, and each error."""
import json
import os
import shutil

import numpy as np
import pytest

from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import DataError

SPLITS = ("train", "val", "test")


def _copy(prepared_data, tmp_path):
    return PreparedData(shutil.copytree(prepared_data, tmp_path / "p"))


def test_reads_back_what_prepare_wrote(prepared_data):
    data = PreparedData(prepared_data)
    raw = lambda name: json.loads((prepared_data / name).read_text(encoding="utf-8"))  # noqa: E731
    assert data.is_complete()
    manifest = data.check_trainable()
    assert manifest == data.read_manifest() == raw("manifest.json")
    assert data.cf_dim() == manifest["cf_dim"] == 300
    assert data.read_splits() == raw("splits.json")
    assert data.read_vocab() == raw("vocab.json")
    w2v = data.read_word2vec()
    assert w2v.dtype == np.float32 and w2v.shape == (len(raw("vocab.json")), 200)
    np.testing.assert_array_equal(w2v, np.load(prepared_data / "word2vec.npy"))
    ids, factors = data.read_cf()
    np.testing.assert_array_equal(ids, np.load(prepared_data / "cf_song_ids.npy"))
    np.testing.assert_array_equal(factors, np.load(prepared_data / "cf_factors.npy"))
    for s in SPLITS:
        files = data.shard_files(s)
        assert [os.path.basename(f) for f in files] == manifest["shards"][s]
        assert files == data.shards_on_disk(s)
        for name in manifest["shards"][s]:
            assert data.finished(s, name)["bytes"] == os.path.getsize(data.shard_path(s, name))
    # the cached state holds the same side inputs, and the plan they were made with
    plan, cache = data.read_plan(), data.read_cache()
    assert plan["params"] == manifest["params"] and cache["vocab"] == data.read_vocab()
    np.testing.assert_array_equal(cache["word2vec"], w2v)


def test_missing_folder_manifest_word2vec_vocab_shards_are_named(prepared_data, tmp_path):
    with pytest.raises(DataError, match=r"nope: no such folder \(make one with `python -m cmir_tf.prepare"):
        PreparedData(tmp_path / "nope").check_trainable()
    with pytest.raises(DataError, match="nope: prepared data folder not found"):
        PreparedData(tmp_path / "nope").shard_files("train")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match=r"half: not a prepared folder, missing word2vec\.npy, vocab\.json \(run"):
        PreparedData(tmp_path / "half").check_trainable()
    with pytest.raises(DataError, match=r"half/train: no TFRecord shards for split 'train'"):
        PreparedData(tmp_path / "half").shard_files("train")

    data = _copy(prepared_data, tmp_path)
    os.unlink(data.manifest_path)
    assert not data.is_complete() and data.read_manifest() == {}  # bare shards stay readable
    with pytest.raises(DataError, match=r"not a prepared folder, missing manifest\.json \(run"):
        data.check_trainable()
    with pytest.raises(DataError, match="word2vec.npy: word2vec matrix not found"):
        PreparedData(tmp_path / "half").read_word2vec()
    with pytest.raises(DataError, match="vocab.json: genre vocabulary not found"):
        PreparedData(tmp_path / "half").read_vocab()
    with pytest.raises(DataError, match=r"splits\.json: missing \(write it with python -m cmir_tf.prepare\)"):
        PreparedData(tmp_path / "half").read_splits()


def test_shard_and_count_faults_are_named(prepared_data, tmp_path):
    data = _copy(prepared_data, tmp_path)
    manifest = data.read_manifest()
    victim = manifest["shards"]["val"][0]
    os.unlink(data.shard_path("val", victim))
    with pytest.raises(DataError, match=rf"manifest\.json: shard '{victim}' of split 'val' is listed but missing"):
        data.shard_files("val")
    with pytest.raises(DataError, match=r"p: missing val/ shards \(\*\.tfrecord\)"):
        data.check_trainable()
    assert data.finished("val", victim) is None  # a done-record without its shard is not finished
    data.write_outputs(splits=data.read_splits(), vocab=data.read_vocab(), word2vec=data.read_word2vec(),
                       cf_ids=data.read_cf()[0], cf=data.read_cf()[1],
                       manifest=dict(manifest, counts=dict(manifest["counts"], val=0)))
    with pytest.raises(DataError, match="p: manifest.json counts no val records"):
        data.check_trainable()
    # a partial shard or a hidden temporary file is never taken for a shard
    open(data.shard_path("train", "train-00000-of-00001.tfrecord.tmp"), "wb").close()
    open(data.shard_path("train", ".cmir-tmp-1-ab-train.tfrecord"), "wb").close()
    assert len(data.shards_on_disk("train")) == len(manifest["shards"]["train"])


def test_malformed_files_are_data_errors_naming_the_file(tmp_path):
    data = PreparedData(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="manifest.json: manifest is not valid JSON"):
        data.read_manifest()
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(DataError, match="manifest.json: the manifest must be a JSON object"):
        data.read_manifest()
    for bad in (0, -3, "300", True):
        with pytest.raises(DataError, match="cf_dim must be a positive integer"):
            data.cf_dim({"cf_dim": bad})
    assert data.cf_dim({}) == 300
    (tmp_path / "splits.json").write_text(json.dumps({"train": [1], "val": []}))
    with pytest.raises(DataError, match=r"splits\.json: expected \{\"train\""):
        data.read_splits()
    (tmp_path / "vocab.json").write_text(json.dumps([{"index": 1, "code": "GN0100"}]))
    with pytest.raises(DataError, match="vocab.json: entry 0 is not"):
        data.read_vocab()
    np.save(tmp_path / "word2vec.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="word2vec.npy: word2vec matrix holds Python objects"):
        data.read_word2vec()
    np.save(tmp_path / "cf_song_ids.npy", np.arange(3))
    np.save(tmp_path / "cf_factors.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="cf_factors.npy: 2 rows for the 3 songs"):
        data.read_cf()
    os.makedirs(tmp_path / "val")
    for name in ("val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord.gz"):
        open(tmp_path / "val" / name, "wb").close()
    with pytest.raises(DataError, match="mixes GZIP"):
        data.shard_files("val", {})


def test_clear_removes_only_what_prepare_writes(prepared_data, tmp_path):
    data = _copy(prepared_data, tmp_path)
    (tmp_path / "p" / "notes.txt").write_text("mine")
    data.clear()
    assert sorted(os.listdir(data.root)) == [".cmir-lock", "notes.txt"]  # the lock file is never deleted
    assert data.read_plan() is None


def test_start_removes_only_dead_writers_temporary_files(tmp_path):
    data = PreparedData(tmp_path / "p")
    data.start()
    dead = os.path.join(data.state.root, ".cmir-tmp-999999999-00ab-vocab.json")  # no such process
    alive = os.path.join(data.root, f".cmir-tmp-{os.getpid()}-00ab-manifest.json")
    for path in (dead, alive):
        open(path, "w").close()
    data.start()
    assert not os.path.exists(dead) and os.path.exists(alive)
