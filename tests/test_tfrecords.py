"""The record schema: what prepare writes is what the pipeline and the numpy reader read back."""
import numpy as np
import pytest

from cmir_tf.data.tfrecords import BYTES_PER_FRAME, parse_example_numpy, serialize_example, shard_name


def test_round_trip_keeps_every_field_and_the_mel_to_float16():
    rng = np.random.default_rng(0)
    mel = rng.normal(-40, 20, size=(300, 48)).astype(np.float32)
    record = serialize_example(1234567, mel, [3, 0, 17], rng.normal(size=300))
    song = parse_example_numpy(record)
    assert song["song_id"] == 1234567 and song["n_frames"] == 300
    np.testing.assert_array_equal(song["mel"], mel.astype(np.float16))
    assert song["genres"].tolist() == [3, 0, 17]
    assert song["cf"].shape == (300,)


def test_mel_bytes_are_time_major_float16_little_endian():
    mel = np.arange(2 * 48, dtype=np.float32).reshape(2, 48)
    from tensorflow.core.example import example_pb2

    raw = example_pb2.Example.FromString(serialize_example(1, mel, [1])).features.feature["mel"].bytes_list.value[0]
    assert len(raw) == 2 * BYTES_PER_FRAME
    # frame 1 is the second run of 96 bytes: a crop is a byte substring
    np.testing.assert_array_equal(np.frombuffer(raw[BYTES_PER_FRAME:], "<f2"), mel[1])


def test_test_songs_have_an_empty_cf_list():
    assert parse_example_numpy(serialize_example(7, np.zeros((256, 48)), [1]))["cf"].size == 0


@pytest.mark.parametrize("mel, reason", [
    (np.zeros((256, 40)), r"\(n_frames, 48\)"),
    (np.zeros(48), r"\(n_frames, 48\)"),
    (np.full((256, 48), np.inf), "non-finite"),
    (np.full((256, 48), 1e6), "non-finite"),  # overflows float16
])
def test_bad_mels_are_refused_naming_the_song(mel, reason):
    with pytest.raises(ValueError, match=rf"song 99: .*{reason}"):
        serialize_example(99, mel, [1])


def test_shard_names_sort_in_order_and_mark_gzip():
    assert shard_name("train", 3, 12) == "train-00003-of-00012.tfrecord"
    assert shard_name("val", 0, 1, compressed=True) == "val-00000-of-00001.tfrecord.gz"
    assert sorted(shard_name("test", i, 11) for i in (10, 2, 0)) == [shard_name("test", i, 11) for i in (0, 2, 10)]


def test_a_song_serializes_to_the_same_bytes_in_every_process():
    """protobuf's upb runtime orders a map by a per-process hash unless asked to be deterministic: the
    same song written by two prepare workers (two processes) must give the same bytes."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np; from cmir_tf.data.tfrecords import serialize_example; "
            "m = np.arange(300 * 48, dtype=np.float32).reshape(300, 48) / 100; "
            "sys.stdout.write(serialize_example(7, m, [3, 1, 2], np.linspace(0, 1, 300)).hex())")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(3)
    }
    assert len(outputs) == 1
    mel = np.arange(300 * 48, dtype=np.float32).reshape(300, 48) / 100
    assert outputs == {serialize_example(7, mel, [3, 1, 2], np.linspace(0, 1, 300)).hex()}
