"""The embedding cache: one embedding per file and model, re-embedded when the file changes; unreadable
files skipped and reported; the model key covers the weights."""
import os

import pytest
from downstream_data import SignalEmbedder, fake_model, gtzan  # noqa: F401 (fixture)

from cmir_tf.errors import DataError, ExportError
from cmir_tf.evaluate.cache import Model, model_fingerprint
from cmir_tf.evaluate.downstream import Params
from cmir_tf.evaluate.gtzan import evaluate_gtzan


def test_cache_embeds_a_dataset_once_per_model(gtzan, tmp_path):
    root, splits = gtzan
    fake = SignalEmbedder()
    p = Params(runs=1, gtzan_max_iter=50, progress=False)
    first = evaluate_gtzan(root, splits, fake_model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 70 and first["embedded"] == 70
    second = evaluate_gtzan(root, splits, fake_model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 70 and second["embedded"] == 0  # all from the cache
    assert second["runs"] == first["runs"]
    assert len(list((tmp_path / "fake" / "gtzan").rglob("*.npy"))) == 70
    # another model has its own cache; a modified file is embedded again
    other = SignalEmbedder()
    evaluate_gtzan(root, splits, Model("other", other, key="other"), params=p, cache_dir=tmp_path)
    assert other.calls == 70
    wav = root / "genres" / "rock" / "rock.00000.wav"
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = evaluate_gtzan(root, splits, fake_model(fake), params=p, cache_dir=tmp_path)
    assert fake.calls == 71 and third["embedded"] == 1


def test_unreadable_files_are_skipped_and_reported(gtzan, tmp_path, capsys):
    root, splits = gtzan
    bad = root / "genres" / "jazz" / "jazz.00006.wav"
    fake = SignalEmbedder()

    def embed(path):
        if path == str(bad):
            raise DataError(f"{path}: cannot decode audio")
        return fake(path)

    def embed_many(paths):  # the batched interface of an exported model
        for p in paths:
            yield (p, None, DataError(f"{p}: cannot decode audio")) if p == str(bad) else (p, fake(p), None)

    p = Params(runs=1, gtzan_max_iter=50, progress=False)
    one = evaluate_gtzan(root, splits, Model("a", embed, "a"), params=p, cache_dir=tmp_path)
    many = evaluate_gtzan(root, splits, Model("b", embed, "b", embed_many), params=p, cache_dir=tmp_path)
    for r in (one, many):
        assert r["skipped"] == [{"path": str(bad), "reason": f"{bad}: cannot decode audio"}]
        assert r["n_test_tracks"] == 29 and r["embedded"] == 69
    assert one["runs"] == many["runs"]
    # one stderr line per skipped file, naming it once
    assert capsys.readouterr().err.splitlines() == [f"{m} gtzan: skipped {bad}: cannot decode audio" for m in "ab"]
    # the batched results were cached like the single ones
    assert len(list((tmp_path / "b" / "gtzan").rglob("*.npy"))) == 69


def test_model_fingerprint_covers_weights(tmp_path):
    for name, weights in (("a", b"1"), ("b", b"2")):
        sm = tmp_path / name / "saved_model" / "3"
        (sm / "variables").mkdir(parents=True)
        (sm / "saved_model.pb").write_bytes(b"same graph")
        (sm / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    assert model_fingerprint(tmp_path / "a") != model_fingerprint(tmp_path / "b")
    assert model_fingerprint(tmp_path / "a") == model_fingerprint(tmp_path / "a" / "saved_model" / "3")
    with pytest.raises(ExportError, match="no SavedModel"):
        model_fingerprint(tmp_path)
