"""Audio pairs: the pair data prepare writes, one epoch's pairs (cmir_tf.data.pairs) and the pair pipeline
(cmir_tf.data.pair_pipeline). Every property is checked against the Melon JSON files and mels themselves
(playlists, artists, genres, frames), independently of the relations the code reads."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import PREPARED_SHARD_SIZE, SYNTH_SEED

from cmir_tf.data.melon import MelonLayout, load_mel
from cmir_tf.data.pairs import EXCLUSIVE, PairSampler
from cmir_tf.data.prepared import PreparedData
from cmir_tf.data.tfrecords import parse_example_numpy, read_record
from cmir_tf.errors import ConfigError, DataError


def melon_groups(melon):
    """{source: {song: set of groups}} straight from the Melon JSON files."""
    songs = {e["id"]: e for e in json.loads((melon / "song_meta.json").read_text())}
    out = {"playlist": {}, "artist": {}, "genre": {}}
    playlists = [p["songs"] for split in ("train", "val", "test")
                 for p in json.loads((melon / f"{split}.json").read_text())]
    for k, songs_of in enumerate(playlists):
        for s in songs_of:
            out["playlist"].setdefault(s, set()).add(k)
    for s, e in songs.items():
        out["artist"][s] = set(e["artist_id_basket"])
        out["genre"][s] = set(e["song_gn_gnr_basket"]) | set(e["song_gn_dtl_gnr_basket"])
    return out


@pytest.fixture(scope="module")
def groups(synth_melon):
    return melon_groups(synth_melon)


@pytest.fixture(scope="module")
def splits(prepared_data):
    return json.loads((prepared_data / "splits.json").read_text())


# ------------------------------------------------------------------------------------------ prepare
def test_prepare_writes_each_splits_relations_and_where_its_records_lie(prepared_data, groups, splits):
    data = PreparedData(prepared_data)
    vocab = {v["index"]: v["code"] for v in data.read_vocab()}
    for split in ("train", "val"):
        songs = set(splits[split])
        for source in ("playlist", "artist", "genre"):
            rel = data.read_relation(split, source)
            assert rel.dtype == np.int64 and set(rel[:, 1]) <= songs
            assert (np.lexsort((rel[:, 1], rel[:, 0])) == np.arange(len(rel))).all()  # sorted, as documented
            # every (group, song) of the split is there, and only those (genre groups are vocabulary indices)
            key = (lambda g: vocab[g]) if source == "genre" else (lambda g: g)
            assert {(key(g), s) for g, s in rel.tolist()} == {(g, s) for s in songs for g in groups[source][s]}
        files, index = data.read_records_index(split)
        assert sorted(index[:, 0].tolist()) == sorted(songs)
        for song, shard, offset, length in index[::7].tolist():
            fd = os.open(files[shard], os.O_RDONLY)
            try:
                assert parse_example_numpy(read_record(fd, offset, length))["song_id"] == song
            finally:
                os.close(fd)


def test_a_folder_without_pair_data_says_to_rerun_prepare_which_adds_it_without_rewriting_shards(
        prepared_data, synth_melon, tmp_path):
    from cmir_tf.data.pair_pipeline import make_pair_dataset
    from cmir_tf.prepare import prepare

    old = tmp_path / "old"
    shutil.copytree(prepared_data, old)
    reference = {n: np.load(old / "pairs" / "train" / f"{n}.npy") for n in ("playlist", "records")}
    shutil.rmtree(old / "pairs")  # as a folder prepared before audio pairs existed
    missing = r"pairs/train/records.npy: missing: this folder was prepared before audio pairs existed; rerun `python -m"
    with pytest.raises(DataError, match=missing):
        make_pair_dataset(old, "train", 8, source="playlist")
    shards = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (old / "train").iterdir()}
    prepare(synth_melon, old, workers=1, seed=SYNTH_SEED, shard_size=PREPARED_SHARD_SIZE, progress=False,
            verbose=False)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (old / "train").iterdir()} == shards
    for name, rows in reference.items():
        np.testing.assert_array_equal(np.load(old / "pairs" / "train" / f"{name}.npy"), rows)


# ------------------------------------------------------------------------------------ epoch pairs
def shares(groups, source, a, b):
    return bool(groups[source][a] & groups[source][b])


@pytest.mark.parametrize("source", ["playlist", "artist", "genre"])
def test_epoch_pairs_share_their_source_and_exclusive_sources_use_a_song_once(prepared_data, groups, splits,
                                                                             source):
    sampler = PairSampler(PreparedData(prepared_data).read_relation("train", source), EXCLUSIVE[source])
    pairs = sampler.epoch(np.random.default_rng([1, 0]))
    assert len(pairs) > 20
    train = set(splits["train"])
    for a, b in pairs.tolist():
        assert a != b and a in train and b in train and shares(groups, source, a, b), (a, b)
    if EXCLUSIVE[source]:  # playlist, genre: a song in at most one pair per epoch
        assert len(np.unique(pairs)) == pairs.size


def test_artist_pairs_may_reuse_a_song_exclusive_sources_never_do():
    # song 3 has two artists (groups 10 and 20); each group has three songs, so an epoch pairs 3 twice
    # whenever it is drawn in both groups, which an exclusive source never allows
    relation = np.array([[10, 1], [10, 2], [10, 3], [20, 3], [20, 4], [20, 5]])
    seen_twice = False
    for exclusive in (False, True):
        sampler = PairSampler(relation, exclusive)
        for epoch in range(40):
            pairs = sampler.epoch(np.random.default_rng([0, epoch]))
            for a, b in pairs.tolist():
                assert {a, b} <= {1, 2, 3} or {a, b} <= {3, 4, 5}
            counts = np.bincount(pairs.ravel(), minlength=6)
            assert counts.max() <= (2 if not exclusive else 1)
            seen_twice |= bool(counts[3] == 2)
        assert seen_twice or exclusive
    assert seen_twice


def test_pairs_change_between_epochs_and_are_the_same_for_a_seed(prepared_data):
    relation = PreparedData(prepared_data).read_relation("train", "playlist")
    a, b = PairSampler(relation, True), PairSampler(relation, True)

    def draw(sampler, seed, epoch):
        return {tuple(sorted(p)) for p in sampler.epoch(np.random.default_rng([seed, epoch])).tolist()}

    assert draw(a, 5, 0) == draw(b, 5, 0) and draw(a, 5, 1) == draw(b, 5, 1)
    assert draw(a, 5, 0) != draw(a, 5, 1)
    assert draw(a, 5, 0) != draw(a, 6, 0)


# -------------------------------------------------------------------------------------- pipeline
def batches(ds, n):
    it = iter(ds)
    return [{k: v.numpy() for k, v in next(it).items()} for _ in range(n)]


def pairs_of(batch):
    m = len(batch["song_id"]) // 2
    return list(zip(batch["song_id"][:m].tolist(), batch["song_id"][m:].tolist()))


def test_pair_batches_are_crops_of_two_songs_sharing_a_playlist(prepared_data, synth_melon, groups):
    from cmir_tf.data.pair_pipeline import make_pair_dataset

    ds = make_pair_dataset(prepared_data, "train", 8, source="playlist", seed=3, with_crop_start=True)
    layout = MelonLayout(synth_melon)
    cf_ids, cf = PreparedData(prepared_data).read_cf()
    cf_row = {int(s): i for i, s in enumerate(cf_ids)}
    vocab = {v["code"]: v["index"] for v in PreparedData(prepared_data).read_vocab()}
    for batch in batches(ds, 2):
        assert batch["mel"].shape == (8, 256, 48)
        for a, b in pairs_of(batch):
            assert a != b and shares(groups, "playlist", a, b)
        for row, song in enumerate(batch["song_id"].tolist()):
            start = batch["crop_start"][row]
            mel = load_mel(layout.mel_path(song)).astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(batch["mel"][row], mel[start:start + 256])
            np.testing.assert_allclose(batch["cf"][row], cf[cf_row[song]], rtol=1e-6)
            genres = set(batch["genres"][row][batch["genre_mask"][row]].tolist())
            assert genres <= {vocab[c] for c in groups["genre"][song]} and genres


def test_pipeline_pairs_are_reproducible_and_change_between_epochs(prepared_data):
    from cmir_tf.data.pair_pipeline import PairPlan, make_pair_dataset

    plan = PairPlan(prepared_data, "train", "genre", seed=4)
    epochs = [[tuple(p) for p in plan.pairs(e).tolist()] for e in (0, 1)]
    steps = -(-(len(epochs[0]) + len(epochs[1])) // 4)  # two epochs in batches of 4 pairs
    runs = [batches(make_pair_dataset(prepared_data, "train", 8, source="genre", seed=4), steps) for _ in range(2)]
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x["mel"], y["mel"])
    stream = [p for b in runs[0] for p in pairs_of(b)]
    assert stream[:len(epochs[0])] == epochs[0]  # the epochs follow one another, none cut or repeated
    assert stream[len(epochs[0]):len(epochs[0]) + len(epochs[1])] == epochs[1]
    assert set(epochs[0]) != set(epochs[1])


def test_input_pipelines_take_disjoint_shares_of_each_epochs_pairs(prepared_data):
    import tensorflow as tf

    from cmir_tf.data.pair_pipeline import PairPlan, make_pair_dataset

    expected = [tuple(p) for p in PairPlan(prepared_data, "train", "playlist", seed=2).pairs(0).tolist()]
    shares_ = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)
        ds = make_pair_dataset(prepared_data, "train", 16, source="playlist", seed=2, input_context=ctx)
        got = [p for b in batches(ds, 3) for p in pairs_of(b)]  # per-replica batches of 8 rows = 4 pairs
        assert len(got) == 12
        shares_.append(got)
    assert shares_[0] == expected[0::2][:12] and shares_[1] == expected[1::2][:12]


def test_self_supervised_second_crop_lies_within_625_frames_of_the_first(prepared_data):
    from cmir_tf.data.pair_pipeline import make_pair_dataset

    n_frames = 1876  # every synthetic song
    ds = make_pair_dataset(prepared_data, "train", 32, source="self", seed=5, with_crop_start=True)
    gaps = []
    for batch in batches(ds, 3):
        m = 16
        assert (batch["song_id"][:m] == batch["song_id"][m:]).all()
        first, second = batch["crop_start"][:m], batch["crop_start"][m:]
        assert ((0 <= second) & (second <= n_frames - 256)).all()
        gaps.extend(np.abs(second - first).tolist())
    gaps = np.array(gaps)
    assert (gaps <= 625).all()
    assert (gaps >= 256).all()  # a 1876-frame song always leaves room for a second crop beside the first
    # evaluation: the first crop is the centre, the second a fixed function of the song
    val = [batches(make_pair_dataset(prepared_data, "val", 8, source="self", training=False,
                                     with_crop_start=True), 2) for _ in range(2)]
    for x, y in zip(*val):
        np.testing.assert_array_equal(x["crop_start"], y["crop_start"])
        assert (x["crop_start"][:4] == (n_frames - 256) // 2).all()
        assert (np.abs(x["crop_start"][4:] - x["crop_start"][:4]) <= 625).all()


def test_second_start_rule_on_every_case_of_short_and_long_songs():
    import tensorflow as tf

    from cmir_tf.data.pair_pipeline import SS_WINDOW, second_starts

    for n in (256, 300, 600, 1000, 1876):
        span = n - 256
        firsts = np.arange(0, span + 1, max(1, span // 40))
        for u in (0.0, 0.37, 0.999999):
            got = second_starts(tf.constant(firsts, tf.int64), tf.fill([len(firsts)], tf.constant(n, tf.int64)),
                                tf.fill([len(firsts)], tf.constant(u, tf.float64))).numpy()
            for first, second in zip(firsts, got):
                window = [s for s in range(max(0, first - SS_WINDOW), min(span, first + SS_WINDOW) + 1)]
                apart = [s for s in window if abs(s - first) >= 256]
                assert second in (apart or window), (n, first, u, second)


def test_pair_pipeline_errors_name_the_value_or_folder(prepared_data, tmp_path):
    from cmir_tf.data.pair_pipeline import make_pair_dataset

    with pytest.raises(ConfigError, match="even number of rows"):
        make_pair_dataset(prepared_data, "train", 7, source="artist")
    with pytest.raises(ConfigError, match="unknown source 'album'"):
        make_pair_dataset(prepared_data, "train", 8, source="album")
    gz = tmp_path / "gz"
    shutil.copytree(prepared_data, gz)
    for shard in (gz / "train").iterdir():
        shard.rename(shard.with_name(shard.name + ".gz"))
    manifest = json.loads((gz / "manifest.json").read_text())
    manifest["shards"]["train"] = [n + ".gz" for n in manifest["shards"]["train"]]
    (gz / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="GZIP shards do not allow"):
        make_pair_dataset(gz, "train", 8, source="playlist")


# ------------------------------------------------ issue 16: records read by offset are checked as strictly
def _copy(prepared_data, tmp_path) -> PreparedData:
    return PreparedData(shutil.copytree(prepared_data, tmp_path / "p"))


def test_masked_crc32c_is_tfrecords_checksum():
    from cmir_tf.data.tfrecords import masked_crc32c

    crc = 0xE3069283  # CRC-32C of b"123456789", the catalogue's check value (RFC 3720, B.4)
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("fault, message", [
    ("negative offset", r"row 3 \(song \d+\) places its record at byte -5, length \d+: outside .*train-\d+"),
    ("past the file", r"row 3 \(song \d+\) places its record at byte \d+, length \d+: outside .*\(\d+ bytes\)"),
    ("huge length", r"row 3 \(song \d+\) places its record at byte \d+, length 9223372036854775000: outside"),
    ("negative length", r"row 3 \(song \d+\) places its record at byte \d+, length -1: outside"),
    ("swapped rows", r"rows 2 and 3 \(songs \d+, \d+\) are not in increasing song order"),
    ("shard", r"row 3 names shard 99, beyond the \d+ of its split"),
])
def test_a_damaged_records_index_is_named_with_its_row(prepared_data, tmp_path, fault, message):
    data = _copy(prepared_data, tmp_path)
    path = data.pair_path("train", "records")
    index = np.load(path)
    shard_size = os.path.getsize(data.shard_files("train")[index[3, 1]])
    if fault == "negative offset":
        index[3, 2] = -5
    elif fault == "past the file":
        index[3, 2] = shard_size
    elif fault == "huge length":
        index[3, 3] = 9223372036854775000
    elif fault == "negative length":
        index[3, 3] = -1
    elif fault == "swapped rows":
        index[[2, 3]] = index[[3, 2]]
    else:
        index[3, 1] = 99
    np.save(path, index)
    with pytest.raises(DataError, match=rf"^{path}: {message}"):
        data.read_records_index("train")


@pytest.mark.parametrize("fault", ["shifted", "data bit", "length checksum"])
def test_a_record_read_by_offset_is_checked_against_its_framing(prepared_data, tmp_path, fault):
    data = _copy(prepared_data, tmp_path)
    files, index = data.read_records_index("train")
    song, shard, offset, length = index[5].tolist()
    path = files[shard]
    if fault == "shifted":
        offset += 1
        message = rf"no record of {length} bytes at byte {offset}"
    else:
        raw = bytearray(open(path, "rb").read())
        raw[offset + length // 2 if fault == "data bit" else offset - 2] ^= 0x01
        open(path, "wb").write(raw)
        what = "data" if fault == "data bit" else "length"
        message = rf"damaged record at byte {offset - 12} \(its {what} checksum does not match\)"
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DataError, match=rf"^{path}: {message}"):
            read_record(fd, offset, length, path)
    finally:
        os.close(fd)


def test_a_flipped_bit_stops_the_pair_pipeline_naming_the_shard(prepared_data, tmp_path):
    """Issue 16 (3): a flipped mantissa bit in a record trained --mode ss silently."""
    import tensorflow as tf

    from cmir_tf.data.pair_pipeline import make_pair_dataset

    data = _copy(prepared_data, tmp_path)
    files, index = data.read_records_index("train")
    raw = {path: bytearray(open(path, "rb").read()) for path in files}
    for _, shard, offset, length in index.tolist():
        raw[files[shard]][offset + length - 1000] ^= 0x01  # inside the mel: a float16 mantissa bit
    for path, content in raw.items():
        open(path, "wb").write(content)
    with pytest.raises(tf.errors.OpError, match=r"DataError: .*train-\d+-of-\d+\.tfrecord: damaged record at byte"):
        next(iter(make_pair_dataset(data.root, "train", 8, source="self", seed=0)))


def test_a_non_finite_crop_stops_the_pair_pipeline_naming_the_shard(prepared_data, tmp_path):
    """Issue 16 (3): NaN float16 values in records (checksums valid) trained to a NaN model, exit 0."""
    import tensorflow as tf

    from cmir_tf.data.pair_pipeline import make_pair_dataset
    from cmir_tf.data.tfrecords import parse_example_numpy

    data = _copy(prepared_data, tmp_path)
    for path in data.shard_files("val"):
        records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        with tf.io.TFRecordWriter(path) as writer:
            for r in records:
                mel = parse_example_numpy(r)["mel"]
                writer.write(r.replace(mel.tobytes(), np.full_like(mel, np.inf).tobytes()))
    with pytest.raises(tf.errors.OpError, match=r"DataError: .*val-\d+-of-\d+\.tfrecord: the record of song \d+ at "
                                                r"byte \d+ holds non-finite mel values"):
        next(iter(make_pair_dataset(data.root, "val", 8, source="playlist", training=False)))


def test_batch_checks_name_the_index_the_shard_or_the_relation_of_the_split(prepared_data):
    from cmir_tf.data.pair_pipeline import PairPlan

    plan = PairPlan(prepared_data, "val", "genre", 0)
    files, index = PreparedData(prepared_data).read_records_index("val")
    where = index[:4, 1:]
    asked = index[:4, 0]
    ok, shares = np.ones(4, bool), np.array([True, False])
    assert (plan.verify(asked, asked, ok, shares, where) == asked).all()
    with pytest.raises(DataError, match=rf"^{plan.index_path}: the row of song {asked[1]} points at the record of "
                                        rf"song {asked[2]} \({files[where[1, 0]]}, byte {where[1, 1]}\)"):
        plan.verify(asked, asked[[0, 2, 2, 3]], ok, shares, where)
    assert "pairs/val/records.npy" in plan.index_path
    with pytest.raises(DataError, match=rf"^{files[where[2, 0]]}: the record of song {asked[2]} at byte "
                                        rf"{where[2, 1]} holds non-finite mel values"):
        plan.verify(asked, asked, np.array([True, True, False, True]), shares, where)
    with pytest.raises(DataError, match=rf"^{plan.relation_path}: no pair of a batch of 2 shares a genre"):
        plan.verify(asked, asked, ok, np.zeros(2, bool), where)
    assert plan.relation_path.endswith(os.path.join("pairs", "val", "genre.npy"))
