"""tf.data pipeline (cmir_tf.data.pipeline): crops, labels, seeding, evaluation mode, sharding, distribution.

Shards are written here with ``cmir_tf.data.tfrecords.serialize_example`` from known numpy songs, and every
value the pipeline yields is checked against those songs (independently of the pipeline's own code).
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cmir_tf.data import pipeline
from cmir_tf.data.tfrecords import serialize_example, shard_name
from cmir_tf.errors import ConfigError, DataError

CF = 300


def make_songs(n, *, seed=0, cf_dim=CF, with_cf=True, first_id=1000, max_frames=700):
    """Songs with random mels (distinct enough that a 256-frame window is found at one offset only)."""
    rng = np.random.default_rng(seed)
    songs = {}
    for k in range(n):
        sid = first_id + 7 * k
        n_frames = int(rng.integers(256, max_frames)) if k % 5 else 256 + 3 * k  # some short, exact 256
        mel = (rng.standard_normal((n_frames, 48)) * 20 - 40).astype(np.float16)
        n_genres = [1, 3, 10, 13, 4][k % 5]
        genres = rng.choice(np.arange(0, 60), size=n_genres, replace=False)  # 0 is a real genre too
        cf = rng.standard_normal(cf_dim).astype(np.float32) if with_cf else None
        songs[sid] = {"mel": mel, "genres": genres, "cf": cf}
    return songs


def write_split(root, split, songs, n_shards, *, compressed=False, manifest=None):
    """Round-robin the songs into ``n_shards`` shards of ``root/split`` (+ optional manifest.json)."""
    os.makedirs(os.path.join(root, split), exist_ok=True)
    ids = sorted(songs)
    names = []
    for s in range(n_shards):
        name = shard_name(split, s, n_shards, compressed)
        names.append(name)
        opts = tf.io.TFRecordOptions(compression_type="GZIP" if compressed else None)
        with tf.io.TFRecordWriter(os.path.join(root, split, name), opts) as w:
            for sid in ids[s::n_shards]:
                song = songs[sid]
                w.write(serialize_example(sid, song["mel"], song["genres"], song["cf"]))
    if manifest is not None:
        with open(os.path.join(root, "manifest.json"), "w") as f:
            json.dump(manifest, f)
    return names


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("prepared"))
    train = make_songs(40, seed=1)
    test = make_songs(12, seed=2, with_cf=False, first_id=90000)
    write_split(root, "train", train, 4)
    write_split(root, "test", test, 1)
    return root, train, test


def find_offset(song_mel16, crop):
    """Every frame offset o at which the song's float16 slice equals the crop (compared as float32)."""
    ref = song_mel16.astype(np.float32)
    first = np.flatnonzero((ref[:ref.shape[0] - 255] == crop[0]).all(axis=1))
    return [int(o) for o in first if np.array_equal(ref[o:o + 256], crop)]


def take(ds, n_batches):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n_batches)]


def check_labels(batch, songs, cf_dim=CF, cf_expected=True):
    for i, sid in enumerate(batch["song_id"]):
        song = songs[int(sid)]
        g = song["genres"][:10]
        assert batch["genres"][i, :len(g)].tolist() == g.tolist()
        assert (batch["genres"][i, len(g):] == 0).all()
        assert batch["genre_mask"][i].tolist() == [True] * len(g) + [False] * (10 - len(g))
        if cf_expected:
            np.testing.assert_array_equal(batch["cf"][i], song["cf"])
        else:
            np.testing.assert_array_equal(batch["cf"][i], np.zeros(cf_dim, np.float32))


def test_training_crops_are_song_slices_and_labels_are_the_songs(data):
    root, train, _ = data
    ds = pipeline.make_dataset(root, "train", 8, seed=11, with_crop_start=True)
    # Static shapes when training (drop_remainder): what model building and TPUs/XLA rely on.
    assert {k: v.shape.as_list() for k, v in ds.element_spec.items()} == {
        "mel": [8, 256, 48], "genres": [8, 10], "genre_mask": [8, 10], "cf": [8, CF], "song_id": [8],
        "crop_start": [8]}
    batches = take(ds, 40)  # 320 examples: eight epochs of the 40 songs (blurred by the shuffle buffer)
    starts = {}
    for b in batches:
        assert b["mel"].shape == (8, 256, 48) and b["mel"].dtype == np.float32
        assert b["genres"].shape == (8, 10) and b["genres"].dtype == np.int32
        assert b["genre_mask"].dtype == bool and b["cf"].shape == (8, CF) and b["cf"].dtype == np.float32
        assert b["song_id"].dtype == np.int64
        check_labels(b, train)
        for i, sid in enumerate(b["song_id"]):
            offsets = find_offset(train[int(sid)]["mel"], b["mel"][i])
            assert offsets == [b["crop_start"][i]], f"song {sid}: crop not found at its offset"
            starts.setdefault(int(sid), []).append(int(b["crop_start"][i]))
    # Every song is drawn, and a song drawn again gets a new random crop, not a fixed window.
    assert sorted(starts) == sorted(train)
    again = [v for sid, v in starts.items() if len(v) > 2 and train[sid]["mel"].shape[0] > 400]
    assert len(again) > 10 and all(len(set(v)) > 1 for v in again)
    assert len({s for v in starts.values() for s in v}) > 100


def test_genre_padding_and_truncation_cover_short_and_long_lists(data):
    root, train, _ = data
    lengths = {len(s["genres"]) for s in train.values()}
    assert {1, 10, 13} <= lengths  # the fixture really has 1, exactly 10 and more than 10 genres
    (b,) = take(pipeline.make_dataset(root, "train", 40, training=False), 1)
    check_labels(b, train)
    sid13 = next(s for s in train if len(train[s]["genres"]) == 13)
    row = list(b["song_id"]).index(sid13)
    assert b["genre_mask"][row].all() and b["genres"][row].tolist() == train[sid13]["genres"][:10].tolist()


def test_test_split_has_zero_cf_and_manifest_cf_dim_is_used(tmp_path):
    songs = make_songs(6, seed=3, cf_dim=16)
    write_split(str(tmp_path), "train", songs, 1)
    write_split(str(tmp_path), "test", make_songs(5, seed=4, with_cf=False, first_id=5000), 1,
                manifest={"cf_dim": 16})
    (b,) = take(pipeline.make_dataset(str(tmp_path), "test", 5, training=False), 1)
    assert b["cf"].shape == (5, 16) and not b["cf"].any()
    (b,) = take(pipeline.make_dataset(str(tmp_path), "train", 6, training=False), 1)
    check_labels(b, songs, cf_dim=16)


def test_cf_of_the_wrong_length_is_an_error(tmp_path):
    write_split(str(tmp_path), "train", make_songs(3, seed=5, cf_dim=7), 1)  # no manifest → CF_DIM=300
    with pytest.raises(tf.errors.InvalidArgumentError, match="cf vector length"):
        take(pipeline.make_dataset(str(tmp_path), "train", 3, training=False), 1)


def test_same_seed_same_batches_different_seed_different_crops(data):
    root = data[0]
    a = take(pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True), 6)
    b = take(pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True), 6)
    c = take(pipeline.make_dataset(root, "train", 8, seed=6, with_crop_start=True), 6)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    starts = lambda bs: {(int(s), int(o)) for b in bs for s, o in zip(b["song_id"], b["crop_start"])}  # noqa
    assert [b["song_id"].tolist() for b in a] != [b["song_id"].tolist() for b in c]
    assert len(starts(a) & starts(c)) < len(starts(a)) // 4  # crops of the same songs mostly differ


def test_parse_parallelism_and_own_threads_change_speed_not_batches(data):
    """The parse calls in flight and the pipeline's threadpool leave the stream as it was (order kept);
    the threadpool size is the dataset's option. The read parallelism sets the order (with the seed)."""
    root = data[0]
    reference = take(pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True), 4)
    tuned = pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True, parse_parallelism=3,
                                  threadpool_size=2)
    assert tuned.options().threading.private_threadpool_size == 2
    assert digest(take(tuned, 4)) == digest(reference)
    for name, value in (("parse_parallelism", 0), ("threadpool_size", 1.5), ("cycle_length", 0)):
        with pytest.raises(ConfigError, match=f"{name} must be a positive integer"):
            pipeline.make_dataset(root, "train", 8, seed=5, **{name: value})


def test_host_defaults_grow_with_the_cores():
    """Per host: reads = cores within [8, 64], parse calls and threads = cores."""
    assert pipeline.host_defaults(2) == {"cycle_length": 8, "parse_parallelism": 2, "threadpool_size": 2}
    assert pipeline.host_defaults(24) == {"cycle_length": 24, "parse_parallelism": 24, "threadpool_size": 24}
    assert pipeline.host_defaults(128) == {"cycle_length": 64, "parse_parallelism": 128, "threadpool_size": 128}
    cores = pipeline.available_cores()
    assert 1 <= cores <= os.cpu_count() and pipeline.host_defaults()["threadpool_size"] == cores


def test_unseeded_runs_differ(data):
    root = data[0]
    a = take(pipeline.make_dataset(root, "train", 8, with_crop_start=True), 2)
    b = take(pipeline.make_dataset(root, "train", 8, with_crop_start=True), 2)
    assert any(not np.array_equal(x["crop_start"], y["crop_start"]) or not np.array_equal(x["song_id"], y["song_id"])
               for x, y in zip(a, b))


def digest(batches):
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            h.update(k.encode() + np.ascontiguousarray(b[k]).tobytes())
    return h.hexdigest()


def test_eval_mode_centre_crop_single_pass_deterministic(data):
    root, train, _ = data
    ds = pipeline.make_dataset(root, "train", 16, training=False, with_crop_start=True)
    first, second = take(ds, 100), take(ds, 100)
    assert [b["song_id"].shape[0] for b in first] == [16, 16, 8]  # one pass, last batch kept
    assert digest(first) == digest(second)
    ids = np.concatenate([b["song_id"] for b in first])
    assert sorted(ids) == sorted(train)
    for b in first:
        check_labels(b, train)
        for i, sid in enumerate(b["song_id"]):
            mel = train[int(sid)]["mel"]
            centre = (mel.shape[0] - 256) // 2
            np.testing.assert_array_equal(b["mel"][i], mel[centre:centre + 256].astype(np.float32))
            assert b["crop_start"][i] == centre
    assert [b["song_id"].shape[0] for b in take(pipeline.make_dataset(root, "train", 16, training=False,
                                                                       drop_remainder=True), 100)] == [16, 16]


# 4 files / 2 workers: split by file; 1 or 3 files / 2 or 4 workers: every worker reads all, split by record.
@pytest.mark.parametrize("n_shards,n_workers", [(4, 2), (1, 2), (3, 4)])
@pytest.mark.parametrize("training", [False, True])
def test_input_context_workers_read_disjoint_covering_parts(tmp_path, n_shards, n_workers, training):
    songs = make_songs(24, seed=7, max_frames=300)
    write_split(str(tmp_path), "train", songs, n_shards)
    per_replica, per_worker = 8 // n_workers, 24 // n_workers
    seen = []
    for i in range(n_workers):
        ctx = tf.distribute.InputContext(num_input_pipelines=n_workers, input_pipeline_id=i,
                                         num_replicas_in_sync=n_workers)
        # Unseeded: each worker draws its own seed, as on a real cluster without one.
        ds = pipeline.make_dataset(str(tmp_path), "train", 8, training=training, input_context=ctx)
        batches = take(ds, 40 if training else 100)  # eval: one pass over the worker's songs
        assert all(b["mel"].shape[0] == per_replica for b in batches)  # global batch 8 / replicas
        ids = [int(s) for b in batches for s in b["song_id"]]
        if not training:
            assert len(ids) == len(set(ids)) == per_worker
        seen.append(set(ids))
    assert sum(len(x) for x in seen) == len(songs) and set().union(*seen) == set(songs)  # disjoint, covering


@pytest.mark.parametrize("training", [False, True])
def test_auto_shard_policy_splits_files_across_workers(data, training):
    """What ``strategy.experimental_distribute_dataset`` does on 2 workers (tf.distribute's own rewrite)."""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    root, train, _ = data
    parts = []
    for i in range(2):
        ds = _AutoShardDataset(pipeline.make_dataset(root, "train", 4, training=training, seed=0), 2, i)
        parts.append({int(s) for b in take(ds, 60 if training else 100) for s in b["song_id"]})
    assert parts[0] and parts[1] and not parts[0] & parts[1] and parts[0] | parts[1] == set(train)


def test_patch_dataset_yields_every_non_overlapping_patch(data):
    root, _, test = data
    got = {}
    for b in take(pipeline.make_patch_dataset(root, "test", 5), 1000):
        assert b["mel"].shape[1:] == (256, 48)
        assert not b["cf"].any()
        check_labels(b, test, cf_expected=False)
        for i, sid in enumerate(b["song_id"]):
            got.setdefault(int(sid), []).append((int(b["patch_index"][i]), int(b["n_patches"][i]), b["mel"][i]))
    assert sorted(got) == sorted(test)
    for sid, patches in got.items():
        mel = test[sid]["mel"].astype(np.float32)
        n = mel.shape[0] // 256
        assert [p for p, _, _ in patches] == list(range(n)) and {k for _, k, _ in patches} == {n}
        for p, _, m in patches:
            np.testing.assert_array_equal(m, mel[256 * p:256 * (p + 1)])


def test_gzip_shards_and_manifest_shard_list(tmp_path):
    songs = make_songs(8, seed=8, max_frames=300)
    names = write_split(str(tmp_path), "val", songs, 2, compressed=True)
    (b,) = take(pipeline.make_dataset(str(tmp_path), "val", 8, training=False), 1)
    assert sorted(b["song_id"]) == sorted(songs)
    # With a manifest the listed shards are read, not whatever else lies in the folder.
    with open(os.path.join(tmp_path, "manifest.json"), "w") as f:
        json.dump({"shards": {"val": names[:1]}}, f)
    (b,) = take(pipeline.make_dataset(str(tmp_path), "val", 8, training=False), 1)
    assert sorted(b["song_id"]) == sorted(songs)[0::2]
    with open(os.path.join(tmp_path, "manifest.json"), "w") as f:
        json.dump({"shards": {"val": ["val-00009-of-00010.tfrecord"]}}, f)
    with pytest.raises(DataError, match="val-00009-of-00010.tfrecord.*missing"):
        pipeline.make_dataset(str(tmp_path), "val", 8)


def test_user_errors_name_the_folder_or_value(tmp_path):
    with pytest.raises(DataError, match="not found"):
        pipeline.make_dataset(str(tmp_path / "nope"), "train", 8)
    with pytest.raises(DataError, match=r"train.*no TFRecord shards"):
        pipeline.make_dataset(str(tmp_path), "train", 8)
    write_split(str(tmp_path), "train", make_songs(2, seed=9), 1)
    with pytest.raises(ConfigError, match="batch_size"):
        pipeline.make_dataset(str(tmp_path), "train", 0)
    with pytest.raises(ConfigError, match="seed"):
        pipeline.make_dataset(str(tmp_path), "train", 8, seed=-1)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="manifest.json"):
        pipeline.make_dataset(str(tmp_path), "train", 8)


def test_record_shorter_than_a_crop_is_reported_with_its_song_id(tmp_path):
    os.makedirs(tmp_path / "train")
    with tf.io.TFRecordWriter(str(tmp_path / "train" / shard_name("train", 0, 1))) as w:
        w.write(serialize_example(4242, np.zeros((100, 48), np.float32), [1], np.zeros(CF)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="4242"):
        take(pipeline.make_dataset(str(tmp_path), "train", 1, training=False), 1)


CHILD = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cmir_tf import pipeline
    root = sys.argv[1]
    tf.random.set_seed(77)  # the global seed is part of every seeded op's stream (see pipeline's docstring)
    ds = pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True)
    h = hashlib.sha256()
    for b in ds.take(6):
        b = {k: v.numpy() for k, v in b.items()}
        for k in sorted(b):
            h.update(k.encode() + np.ascontiguousarray(b[k]).tobytes())
    out = {"digest": h.hexdigest()}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_dataset(root, "train", 8, seed=1, input_context=ctx))
    batch = next(iter(dist))
    local = strategy.experimental_local_results(batch["mel"])
    out["replica_shapes"] = [list(t.shape) for t in local]
    ids = strategy.experimental_local_results(batch["song_id"])
    out["replica_ids"] = [t.numpy().tolist() for t in ids]
    evals = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_dataset(root, "train", 8, training=False, input_context=ctx))
    out["eval_ids"] = [[t.numpy().tolist() for t in strategy.experimental_local_results(b["song_id"])]
                       for b in evals]
    dist2 = strategy.experimental_distribute_dataset(pipeline.make_dataset(root, "train", 8, seed=1))
    out["auto_shapes"] = [list(t.shape) for t in strategy.experimental_local_results(next(iter(dist2))["mel"])]
    print(json.dumps(out))
""")


def test_mirrored_strategy_and_reproducibility_across_processes(data):
    root, train, _ = data
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([sys.executable, "-c", CHILD, root], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # A fresh process with the same seeds yields byte-identical batches, whatever ran before in this one.
    tf.random.set_seed(77)
    here = take(pipeline.make_dataset(root, "train", 8, seed=5, with_crop_start=True), 6)
    assert out["digest"] == digest(here)
    # Two replicas, each with the per-replica batch, different songs.
    assert out["replica_shapes"] == [[4, 256, 48], [4, 256, 48]]
    assert all(set(ids) <= set(train) for ids in out["replica_ids"])
    # An evaluation pass through the strategy sees every song exactly once, 4 per replica per step.
    assert all(len(r) == 4 for step in out["eval_ids"] for r in step)
    flat = [s for step in out["eval_ids"] for r in step for s in r]
    assert sorted(flat) == sorted(train)
    assert out["auto_shapes"] == [[4, 256, 48], [4, 256, 48]]


# ------------------------------------------------------------------ synth → prepare → pipeline round trip
def _expected_genres(root_melon, prepared):
    """Song id → its vocabulary indices (major then detailed, de-duplicated), from the raw JSON files."""
    with open(os.path.join(root_melon, "song_meta.json")) as f:
        meta = json.load(f)
    with open(os.path.join(prepared, "vocab.json")) as f:
        index = {v["code"]: v["index"] for v in json.load(f)}
    out = {}
    for e in meta:
        if int(e["id"]) in out:
            continue
        codes = list(dict.fromkeys([*(e.get("song_gn_gnr_basket") or []), *(e.get("song_gn_dtl_gnr_basket") or [])]))
        out[int(e["id"])] = [index[c] for c in codes if c in index]
    return out


def _npy_mel(root_melon, sid):
    path = os.path.join(root_melon, "arena_mel", str(sid // 1000), f"{sid}.npy")
    return np.load(path, allow_pickle=False).T  # (48, T) on disk → time-major


def test_round_trip_synth_prepare_pipeline_matches_npy(synth_melon, prepared_data):
    melon, prepared = str(synth_melon), str(prepared_data)
    genres = _expected_genres(melon, prepared)
    with open(os.path.join(prepared, "splits.json")) as f:
        splits = json.load(f)
    cf = dict(zip(np.load(os.path.join(prepared, "cf_song_ids.npy")).tolist(),
                  np.load(os.path.join(prepared, "cf_factors.npy"))))

    def check(batch, split, training):
        for i, sid in enumerate(batch["song_id"].tolist()):
            assert sid in splits[split]
            ref = _npy_mel(melon, sid)
            o = int(batch["crop_start"][i])
            if not training:
                assert o == (ref.shape[0] - 256) // 2
            # The crop is the song's npy slice at its offset, to float16 precision ...
            np.testing.assert_allclose(batch["mel"][i], ref[o:o + 256], rtol=2 ** -11, atol=1e-3)
            # ... and exactly its float16 rounding; matching recovers that same offset.
            ref16 = ref.astype(np.float16)
            assert find_offset(ref16, batch["mel"][i]) == [o]
            g = genres[sid][:10]
            assert batch["genres"][i, :len(g)].tolist() == g and not batch["genres"][i, len(g):].any()
            assert batch["genre_mask"][i].sum() == len(g) and batch["genre_mask"][i, :len(g)].all()
            if split == "test":
                assert not batch["cf"][i].any()
            else:
                np.testing.assert_array_equal(batch["cf"][i], cf[sid])

    for b in take(pipeline.make_dataset(prepared, "train", 32, seed=3, with_crop_start=True), 3):
        check(b, "train", True)
    for split in ("val", "test"):
        seen = []
        for b in take(pipeline.make_dataset(prepared, split, 16, training=False, with_crop_start=True), 1000):
            check(b, split, False)
            seen += b["song_id"].tolist()
        assert sorted(seen) == sorted(splits[split])


MALLOC_CHILD = textwrap.dedent("""
    import ctypes, json
    from cmir_tf.data.pipeline import tune_malloc

    libc = ctypes.CDLL("libc.so.6")
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped_blocks_for(size):
        base = libc.mallinfo2().hblks
        p = libc.malloc(size)
        n = libc.mallinfo2().hblks - base
        libc.free(p)
        return n

    out = {"ok": tune_malloc(), "2MB": mmapped_blocks_for(2 << 20), "8MB": mmapped_blocks_for(8 << 20)}
    print(json.dumps(out))
""")


def test_tune_malloc_keeps_record_sized_buffers_off_mmap():
    res = subprocess.run([sys.executable, "-c", MALLOC_CHILD], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    # The mmap threshold is now fixed at 4 MB: a 2 MB block comes from the heap, an 8 MB one is mmap-ed.
    assert (out["2MB"], out["8MB"]) == (0, 1)
