"""MTG-Jamendo: CRLF split TSVs and NN/ID.mp3 audio, and the tagging protocol measures what it claims."""
import dataclasses

import pytest
from downstream_data import FAST, NoiseEmbedder, SignalEmbedder, fake_model, jamendo  # noqa: F401 (fixture)

from cmir_tf.errors import ConfigError, DataError
from cmir_tf.evaluate.jamendo import JAMENDO_SPLITS, evaluate_jamendo, read_jamendo


def test_jamendo_reads_crlf_tsvs(jamendo):
    audio, splits = jamendo
    split = read_jamendo(audio, splits, "instrument")
    assert [len(split[s]) for s in JAMENDO_SPLITS] == [40, 15, 20]
    tid, path, tags = split["train"][0]
    assert tid == "track_0001000" and path == audio / "00" / "1000.mp3"
    assert tags and all(t.startswith("instrument---") and not t.endswith("\r") for t in tags)
    assert read_jamendo(audio, splits, "genre")["train"][0][2] == ["genre---rock", "genre---rare"]


@pytest.mark.slow
def test_jamendo_signal_high_noise_chance(jamendo):
    audio, splits = jamendo
    good = evaluate_jamendo(audio, splits, fake_model(SignalEmbedder()), categories=["genre", "instrument"],
                               params=FAST)
    for cat in ("genre", "instrument"):
        assert len(good[cat]["runs"]) == 2 and good[cat]["mean"] >= 0.9, good[cat]
    # a tag with no test track has no ROC-AUC: left out and listed
    assert good["genre"]["excluded_tags"] == ["genre---rare"]
    assert good["genre"]["n_tags"] == 4 and good["genre"]["n_tags_evaluated"] == 3
    noise = evaluate_jamendo(audio, splits, fake_model(NoiseEmbedder()), categories=["genre", "instrument"],
                                params=dataclasses.replace(FAST, runs=1))
    for cat in ("genre", "instrument"):
        assert 0.25 <= noise[cat]["mean"] <= 0.75, noise[cat]


def test_jamendo_errors(jamendo, tmp_path):
    audio, splits = jamendo
    with pytest.raises(DataError, match="autotagging_moodtheme-train.tsv: MTG-Jamendo split file is missing"):
        read_jamendo(audio, splits, "moodtheme")
    with pytest.raises(ConfigError, match="unknown category 'mood'"):
        read_jamendo(audio, splits, "mood")
    bad = tmp_path / "split"
    bad.mkdir()
    for s in JAMENDO_SPLITS:
        (bad / f"autotagging_genre-{s}.tsv").write_bytes(
            b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\ntrack_1\ta\tb\t01/1.mp3\t3.0\tgenre---rock\r\n")
    with pytest.raises(DataError, match=r"1 MTG-Jamendo audio files listed in .*autotagging_genre-train.tsv.*01/1\.mp3"):
        read_jamendo(audio, bad, "genre")
    (bad / "autotagging_genre-train.tsv").write_bytes(b"ID,PATH\r\n1,01/1.mp3\r\n")
    with pytest.raises(DataError, match=r"train.tsv:1: header column 1 is 'ID,PATH', expected 'TRACK_ID'"):
        read_jamendo(audio, bad, "genre")
