"""The annoy similarity tool: folder reading, exact answers on small indexes, persistence, CLI, errors."""
import json
import os

import numpy as np
import pytest

from cmir_tf.errors import ConfigError, DataError
from cmir_tf.similar import SimilarityIndex, find_similar, load_embedding_folder, main


def _brute_force(vectors, query, k, exclude=()):
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = v @ (query / np.linalg.norm(query))
    order = [int(i) for i in np.argsort(-cos, kind="stable") if int(i) not in exclude]
    return order[:k], cos


@pytest.fixture
def folder(tmp_path):
    """30 tracks: some as patch embeddings (P, 16) in a sub-folder, some as vectors (16,)."""
    rng = np.random.default_rng(1)
    d = tmp_path / "emb"
    (d / "7").mkdir(parents=True)
    means = {}
    for i in range(30):
        if i % 2:
            patches = rng.normal(size=(int(rng.integers(1, 5)), 16)).astype(np.float32)
            np.save(d / "7" / f"{i}.npy", patches)
            means[f"7/{i}"] = patches.mean(axis=0)
        else:
            v = rng.normal(size=16).astype(np.float32)
            np.save(d / f"t{i}.npy", v)
            means[f"t{i}"] = v
    return d, means


def test_folder_reads_vectors_and_means_of_patches(folder):
    d, means = folder
    ids, vectors = load_embedding_folder(d)
    assert ids == sorted(means)
    for i, v in zip(ids, vectors):
        np.testing.assert_allclose(v, means[i], rtol=1e-6)


def test_mean_file_takes_precedence(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4), np.float32))
    np.save(tmp_path / "a.mean.npy", np.array([1, 2, 3, 4], np.float32))
    np.save(tmp_path / "b.npy", np.array([4, 3, 2, 1], np.float32))
    ids, vectors = load_embedding_folder(tmp_path)
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(vectors[0], [1, 2, 3, 4])


def test_answers_equal_brute_force_cosine(folder):
    d, _ = folder
    ids, vectors = load_embedding_folder(d)
    index = SimilarityIndex(ids, vectors, n_trees=10, search_k=100_000)  # search every leaf: exact
    rng = np.random.default_rng(2)
    for _ in range(10):
        q = rng.normal(size=16).astype(np.float32)
        hits = index.query(q, 7)
        order, cos = _brute_force(vectors, q, 7)
        assert [h[0] for h in hits] == [ids[i] for i in order]
        np.testing.assert_allclose([h[1] for h in hits], cos[order], atol=1e-5)
    # by id: the track itself is left out, the rest is the brute-force order
    hits = index.query_id(ids[3], 5)
    order, cos = _brute_force(vectors, vectors[3], 5, exclude={3})
    assert [h[0] for h in hits] == [ids[i] for i in order]
    assert ids[3] not in [h[0] for h in hits]
    # k beyond the index size returns everything once
    assert len(index.query(vectors[0], 100)) == len(ids)


def test_save_load_round_trip_and_rebuild_on_change(folder, tmp_path, capsys):
    d, _ = folder
    path = tmp_path / "idx" / "emb.ann"
    first = find_similar(d, track_id="t0", k=5, index_path=str(path))
    assert path.is_file() and (tmp_path / "idx" / "emb.ann.ids.json").is_file()
    loaded, _ = SimilarityIndex.load(path)
    assert loaded.query_id("t0", 5) == first
    # a changed folder is noticed and the index rebuilt: the new track is found
    np.save(d / "new.npy", np.load(d / "t0.npy") * 2)  # same direction as t0: cosine 1
    again = find_similar(d, track_id="t0", k=1, index_path=str(path))
    assert "rebuilding" in capsys.readouterr().err
    assert again[0][0] == "new" and again[0][1] == pytest.approx(1.0, abs=1e-5)


def test_id_by_file_name_and_errors(folder):
    d, _ = folder
    assert find_similar(d, track_id="3", k=2) == find_similar(d, track_id="7/3", k=2)
    with pytest.raises(ConfigError, match="no such track"):
        find_similar(d, track_id="nope", k=2)
    with pytest.raises(ConfigError, match="exactly one"):
        find_similar(d, k=2)


def test_file_query_embedding_and_audio(folder, tmp_path):
    d, means = folder
    # an embedding inside the folder: itself is excluded from the answer
    hits = find_similar(d, file=str(d / "7" / "3.npy"), k=3)
    assert "7/3" not in [h[0] for h in hits]
    assert hits == find_similar(d, track_id="7/3", k=3)
    # something that is not an embedding needs a model (or an embedder)
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF")
    with pytest.raises(ConfigError, match=r"--file .*x\.wav: not a 16-d embedding; embedding it needs --model"):
        find_similar(d, file=str(wav), k=3)

    class FakeEmbedder:
        def embed_file(self, path):
            return np.stack([means["t4"]] * 2), means["t4"]

    hits = find_similar(d, file=str(wav), k=1, embedder=FakeEmbedder())
    assert hits[0][0] == "t4" and hits[0][1] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(16, np.float32), "all zeros"),
    (np.full(16, np.nan, np.float32), "NaN"),
    (np.ones(8, np.float32), "8 dimensions"),
    (np.ones((2, 2, 16), np.float32), "shape"),
])
def test_bad_embedding_files_name_the_file(folder, bad, match):
    d, _ = folder
    np.save(d / "zz_bad.npy", bad)
    with pytest.raises(DataError, match=rf"zz_bad\.npy.*{match}"):
        load_embedding_folder(d)


def test_pickled_file_is_refused_not_loaded(tmp_path):
    with open(tmp_path / "evil.npy", "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="evil.npy"):
        load_embedding_folder(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no .npy"):
        load_embedding_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_embedding_folder(tmp_path / "missing")


def test_cli_table_and_json(folder, capsys):
    d, means = folder
    assert main([str(d), "--id", "t0", "-k", "3"]) == 0
    note, header, *lines = capsys.readouterr().out.strip().splitlines()
    assert note.startswith("# cosine: cosine similarity") and header == "rank\tcosine\tid"
    assert len(lines) == 3 and lines[0].startswith("1\t")
    q = means["t0"] / np.linalg.norm(means["t0"])
    for line in lines:  # the printed score is the cosine of the two track vectors
        _, score, track = line.split("\t")
        assert float(score) == pytest.approx(float(q @ means[track] / np.linalg.norm(means[track])), abs=1e-4)
    assert main([str(d), "--id", "t0", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == [line.split("\t")[2] for line in lines]
    assert main([str(d), "--id", "missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such track" in err


def test_cli_model_without_saved_model_is_one_line(folder, tmp_path, capsys):
    """--file that must be embedded, with --model naming a folder without a SavedModel: an ExportError,
    reported as one line with exit code 2 (it used to end in a traceback)."""
    d, _ = folder
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF")
    (tmp_path / "empty").mkdir()
    assert main([str(d), "--file", str(wav), "--model", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no SavedModel" in err, err


def test_saved_index_is_readable_by_others(folder, tmp_path):
    d, _ = folder
    path = tmp_path / "emb.ann"
    old = os.umask(0o022)
    try:
        find_similar(d, track_id="t0", k=1, index_path=str(path))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "emb.ann.ids.json").stat().st_mode & 0o777 == 0o644
