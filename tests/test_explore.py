"""`python -m cmir_tf.explore`: the page's data against `similar` and the metadata files, and the page
itself in headless Chromium (every track drawn, a real click lists `similar`'s neighbours, search, audio)."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cmir_tf import explore, synth
from cmir_tf.fileio import save_npy, write_json
from cmir_tf.melon import MelonLayout, read_genres, read_song_meta
from cmir_tf.similar import find_similar

import browser

N_SONGS, K = 60, 5
AUDIO_SONGS = (3, 17, 42)  # songs with a wav file under audio/


def make_library(root: Path, n: int = N_SONGS) -> dict:
    """A synthetic Melon folder, embeddings clustered by major genre (ids ``0/<song>``), a splits.json and
    tagged wav files for :data:`AUDIO_SONGS` in the embed id layout (``audio/0/<song>.wav``)."""
    facts = synth.make_synthetic_melon(root / "melon", songs=n, playlists=15, mels=False)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    for i in range(n):
        save_npy(root / "emb" / "0" / f"{i}.mean.npy",
                 (centres[facts["major"][i] % 8] + 0.7 * rng.normal(size=16)).astype(np.float32))
    write_json(root / "prepared" / "splits.json", {"train": list(range(0, n, 3)), "val": list(range(1, n, 3)),
                                                   "test": [2]})
    for i in AUDIO_SONGS:
        (root / "audio" / "0").mkdir(parents=True, exist_ok=True)
        with sf.SoundFile(root / "audio" / "0" / f"{i}.wav", "w", 16000, 1) as f:
            f.title, f.artist = f"Tagged {i}", "Tag Artist"
            f.write(0.1 * np.sin(np.arange(16000 * (i % 3 + 1)) / 5.0))
    return facts


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    make_library(root)
    return root


def page_data(page) -> dict:
    text = Path(page).read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="cmir-data">(.*?)</script>', text, re.S).group(1))


def test_page_lists_similars_neighbours_and_the_metadata(library, tmp_path):
    out = tmp_path / "map"
    summary = explore.write_explorer(library / "emb", out, k=K, color="genre", melon=library / "melon",
                                     prepared=library / "prepared", audio=library / "audio", projection="pca")
    assert summary["drawn"] == summary["tracks"] == N_SONGS
    data = page_data(out / "index.html")
    assert sorted(data["ids"]) == sorted(f"0/{i}" for i in range(N_SONGS)) and all(data["drawn"])
    for r, track in enumerate(data["ids"]):  # similar's own index, built once and saved (the page's was not)
        expected = find_similar(library / "emb", track_id=track, k=K, index_path=tmp_path / "similar.ann")
        assert [data["ids"][i] for i in data["near"][r]] == [t for t, _ in expected]
        np.testing.assert_allclose(data["score"][r], [s for _, s in expected], atol=1e-6)
    # the neighbours are the cosine-nearest tracks (an independent brute-force computation)
    vec = {t: np.load(library / "emb" / f"{t}.mean.npy") for t in data["ids"]}
    unit = {t: v / np.linalg.norm(v) for t, v in vec.items()}
    q = data["ids"][0]
    brute = sorted((t for t in data["ids"] if t != q), key=lambda t: -float(unit[q] @ unit[t]))[:K]
    assert [data["ids"][i] for i in data["near"][0]] == brute
    songs, _ = read_song_meta(MelonLayout(library / "melon").song_meta)
    genres = read_genres(MelonLayout(library / "melon").genres)
    for r, track in enumerate(data["ids"]):
        song = songs[int(track.split("/")[1])]
        assert data["names"][r] == f"{song.song_name} — {', '.join(song.artist_name_basket)}"
        assert data["labels"][r] == genres[song.major[0]]
        link = data["audio"][r]
        if song.id in AUDIO_SONGS:  # a relative URL from the page to the file
            assert (out / link).resolve() == (library / "audio" / "0" / f"{song.id}.wav").resolve()
        else:
            assert link is None


def test_split_colours_and_tag_names_without_melon(library, tmp_path):
    explore.write_explorer(library / "emb", tmp_path, k=2, color="split", prepared=library / "prepared",
                           audio=library / "audio", projection="pca")
    data = page_data(tmp_path / "index.html")
    for r, track in enumerate(data["ids"]):
        song = int(track.split("/")[1])
        split = "train" if song % 3 == 0 else "val" if song % 3 == 1 else "test" if song == 2 else "unknown"
        assert data["labels"][r] == split
        assert data["names"][r] == (f"Tagged {song} — Tag Artist" if song in AUDIO_SONGS else track)


def test_beyond_max_points_a_sample_is_drawn_and_neighbours_still_come_from_all(library, tmp_path):
    summary = explore.write_explorer(library / "emb", tmp_path, k=K, max_points=10, projection="pca")
    data = page_data(tmp_path / "index.html")
    assert summary["drawn"] == sum(data["drawn"]) == 10 and summary["tracks"] == N_SONGS
    for r in (r for r, d in enumerate(data["drawn"]) if d):
        expected = find_similar(library / "emb", track_id=data["ids"][r], k=K)
        assert [data["ids"][i] for i in data["near"][r]] == [t for t, _ in expected]
    assert len(data["ids"]) < N_SONGS and not any(data["near"][r] for r, d in enumerate(data["drawn"]) if not d)


def test_page_needs_no_network(library, tmp_path):
    explore.write_explorer(library / "emb", tmp_path, k=2, projection="pca")
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js itself is inlined


@pytest.mark.parametrize("args, message", [
    (["--color", "split"], "colour by split needs a prepared folder (--prepared)"),
    (["-k", "0"], "k must be at least 1, got 0"),
    (["--melon", "{tmp}"], "not a Melon folder (no song_meta.json)"),
    (["--audio", "{tmp}/nowhere"], "nowhere: audio folder does not exist"),
])
def test_cli_bad_input_is_one_error_line(library, tmp_path, capsys, args, message):
    code = explore.main([str(library / "emb"), "--out", str(tmp_path / "map"), "--projection", "pca",
                         *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_missing_embedding_folder(tmp_path, capsys):
    assert explore.main([str(tmp_path / "none"), "--out", str(tmp_path / "map")]) == 2
    assert "embedding folder does not exist" in capsys.readouterr().err


def test_tsne_keeps_more_neighbourhoods_than_pca(library):
    """The reason t-SNE is the default (README "Exploring embeddings")."""
    from sklearn.neighbors import NearestNeighbors

    from cmir_tf.similar import load_embedding_folder

    _, x = load_embedding_folder(library / "emb")

    def kept(y, k=5):
        a = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x, return_distance=False)[:, 1:]
        b = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y, return_distance=False)[:, 1:]
        return np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b)])

    tsne, pca = explore.project(x, "tsne"), explore.project(x, "pca")
    assert np.abs(tsne).max() == pytest.approx(1.0) and np.isfinite(tsne).all()
    assert kept(tsne) > kept(pca) + 0.1
