"""GTZAN: the real layout (genres/ + fault-filtered split lists), and the protocol measures what it claims."""
import pytest
from downstream_data import FAST, NoiseEmbedder, SignalEmbedder, fake_model, gtzan  # noqa: F401 (fixture)

from cmir_tf.errors import DataError
from cmir_tf.evaluate.gtzan import evaluate_gtzan, read_gtzan


def test_gtzan_reads_the_real_layout(gtzan):
    root, splits = gtzan
    split = read_gtzan(root, splits)
    assert {s: len(v) for s, v in split.items()} == {"train": 40, "valid": 10, "test": 30}
    path, genre = split["test"][0]
    assert genre == "blues" and path == root / "genres" / "blues" / "blues.00005.wav"
    # the folder holding blues/, classical/, ... directly is accepted too
    assert read_gtzan(root / "genres", splits)["test"][0][0] == path


def test_gtzan_signal_high_noise_chance(gtzan):
    root, splits = gtzan
    good = evaluate_gtzan(root, splits, fake_model(SignalEmbedder()), params=FAST)
    assert good["n_train_tracks"] == 40 and good["n_test_tracks"] == 30
    # every patch is a training instance: 9 s at 22050 Hz = 774 frames of 256 samples = 3 patches
    assert good["n_train_instances"] == 40 * 3
    assert len(good["runs"]) == 2 and good["mean"] >= 90.0
    noise = evaluate_gtzan(root, splits, fake_model(NoiseEmbedder()), params=FAST)
    assert noise["mean"] <= 35.0  # chance is 10 %


def test_gtzan_errors_name_missing_files(gtzan, tmp_path):
    root, splits = gtzan
    with pytest.raises(DataError, match="train_filtered.txt: GTZAN split list is missing"):
        read_gtzan(root, tmp_path)
    (tmp_path / "train_filtered.txt").write_text("blues/blues.00000.wav\nrock/rock.00099.wav\n")
    (tmp_path / "test_filtered.txt").write_text("blues/blues.00005.wav\n")
    with pytest.raises(DataError, match=r"1 GTZAN files listed in .*train_filtered.txt.*rock\.00099\.wav"):
        read_gtzan(root, tmp_path)
    (tmp_path / "train_filtered.txt").write_text("blues.00000.wav\n")
    with pytest.raises(DataError, match=r"train_filtered.txt:1: expected a line like"):
        read_gtzan(root, tmp_path)
    with pytest.raises(DataError, match="nope: GTZAN folder does not exist"):
        read_gtzan(tmp_path / "nope", splits)
