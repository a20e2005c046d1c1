"""`python -m cmir_tf.explore`: the page's data against `similar` and the metadata files, and the page
itself in headless Chromium (every track drawn, a real click lists `similar`'s neighbours, search, audio)."""
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import browser
import numpy as np
import pytest
import soundfile as sf

from cmir_tf import explore, synth
from cmir_tf.data.melon import MelonLayout, read_genres, read_song_meta
from cmir_tf.explore import page
from cmir_tf.fileio import save_npy, write_json
from cmir_tf.similar import find_similar

N_SONGS, K = 60, 5
AUDIO_SONGS = (3, 17, 42)  # songs with a wav file under AUDIO_DIR
AUDIO_DIR = "my música"  # a link to it must be URL-quoted


def make_library(root: Path, n: int = N_SONGS) -> dict:
    """A synthetic Melon folder, embeddings clustered by major genre (ids ``0/<song>``), a splits.json and
    tagged wav files for :data:`AUDIO_SONGS` in the embed id layout (``AUDIO_DIR/0/<song>.wav``)."""
    facts = synth.make_synthetic_melon(root / "melon", songs=n, playlists=15, mels=False)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    for i in range(n):
        save_npy(root / "emb" / "0" / f"{i}.mean.npy",
                 (centres[facts["major"][i] % 8] + 0.7 * rng.normal(size=16)).astype(np.float32))
    write_json(root / "prepared" / "splits.json", {"train": list(range(0, n, 3)), "val": list(range(1, n, 3)),
                                                   "test": [2]})
    for i in AUDIO_SONGS:
        (root / AUDIO_DIR / "0").mkdir(parents=True, exist_ok=True)
        with sf.SoundFile(root / AUDIO_DIR / "0" / f"{i}.wav", "w", 16000, 1) as f:
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
                                     prepared=library / "prepared", audio=library / AUDIO_DIR, projection="pca")
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
            target = (out / urllib.parse.unquote(link)).resolve()
            assert target == (library / AUDIO_DIR / "0" / f"{song.id}.wav").resolve()
        else:
            assert link is None


def test_split_colours_and_tag_names_without_melon(library, tmp_path):
    explore.write_explorer(library / "emb", tmp_path, k=2, color="split", prepared=library / "prepared",
                           audio=library / AUDIO_DIR, projection="pca")
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


# ------------------------------------------------------------------------------------ in a real browser
SCREENSHOT_ENV = "CMIR_SCREENSHOT_DIR"  # when set, the browser test also saves its screenshot there


@pytest.fixture
def chrome(tmp_path):
    reason = browser.missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    driver = browser.chromium(tmp_path / "profile")
    yield driver
    driver.quit()


_DRAWN = """const gd = document.getElementById('map');
const rows = [], pts = gd.querySelectorAll('.scatterlayer .trace .points path.point').length;
gd._fullData.forEach(t => { if (t.name !== 'links' && t.name !== 'selection') rows.push(...Array.from(t.customdata)); });
return [rows, pts];"""
_POINT_AT = """const gd = document.getElementById('map'), row = arguments[0], box = gd.getBoundingClientRect();
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, D = JSON.parse(document.getElementById('cmir-data').textContent);
return [box.left + xa._offset + xa.l2p(D.x[row]), box.top + ya._offset + ya.l2p(D.y[row])];"""


def _neighbours_on_page(driver) -> list[tuple[str, float]]:
    return [(li.get_attribute("data-id"), float(li.get_attribute("data-score")))
            for li in driver.find_elements("css selector", "#selected li.nbr")]


@pytest.mark.slow  # 8 s on a quiet machine, 30-70 s on 2 busy cores: Chromium starting, 4.8 MB of plotly.js
def test_page_in_chromium_draws_every_track_and_a_click_lists_similars_neighbours(library, tmp_path, chrome):
    """Tracks drawn (read off the page's SVG and Plotly's data), a real mouse click on a point (Selenium's
    pointer at the point's pixel: Plotly turns it into its plotly_click), the neighbours read off the
    panel against similar's, search, audio that loads through its relative link; a screenshot."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "map"
    explore.write_explorer(library / "emb", out, k=K, color="genre", melon=library / "melon",
                           audio=library / AUDIO_DIR)
    data = page_data(out / "index.html")
    chrome.get((out / "index.html").as_uri())
    rows, points = chrome.execute_script(_DRAWN)
    assert sorted(rows) == list(range(N_SONGS)) and points == N_SONGS
    row = data["ids"].index("0/42")  # a song with audio, as are some of its neighbours maybe
    x, y = chrome.execute_script(_POINT_AT, row)
    ActionChains(chrome).move_by_offset(round(x), round(y)).click().perform()
    WebDriverWait(chrome, 10).until(lambda d: d.find_element("id", "selected").get_attribute("data-id"))
    assert chrome.find_element("id", "selected").get_attribute("data-id") == "0/42"
    hover = chrome.execute_script(
        "return [...document.querySelectorAll('.hoverlayer .hovertext')].map(e => e.textContent)")
    assert data["names"][row] in hover  # the pointer rests on the point: its hover label names the track
    expected = find_similar(library / "emb", track_id="0/42", k=K)
    shown = _neighbours_on_page(chrome)
    assert [t for t, _ in shown] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in shown], [s for _, s in expected], atol=1e-6)
    # the track's audio plays from the file system: the browser reads the wav's duration through the link
    duration = chrome.execute_async_script(
        "const a = document.querySelector('#selected audio'), done = arguments[0];"
        "a.preload = 'auto'; a.addEventListener('loadedmetadata', () => done(a.duration));"
        "a.addEventListener('error', () => done(-1)); a.load();")
    assert duration == pytest.approx(sf.info(library / AUDIO_DIR / "0" / "42.wav").duration, abs=0.05)
    _save_screenshot(chrome, tmp_path)
    # search: typing part of a name and Enter selects the first match
    name = data["names"][data["ids"].index("0/7")]
    box = chrome.find_element("id", "search")
    box.send_keys(name.split(" — ")[0] + "\n")
    WebDriverWait(chrome, 10).until(lambda d: d.find_element("id", "selected").get_attribute("data-id") != "0/42")
    first = chrome.find_elements("css selector", "#matches li.match")[0].get_attribute("data-id")
    assert chrome.find_element("id", "selected").get_attribute("data-id") == first
    assert name in [data["names"][data["ids"].index(li.get_attribute("data-id"))]
                    for li in chrome.find_elements("css selector", "#matches li.match")]


def _save_screenshot(driver, tmp_path) -> None:
    shot = tmp_path / "explore.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        os.makedirs(os.environ[SCREENSHOT_ENV], exist_ok=True)
        shutil.copy(shot, os.environ[SCREENSHOT_ENV])


def test_playlist_colour_is_the_largest_playlist_a_track_is_in(library, tmp_path):
    from cmir_tf.data.melon import read_playlists

    explore.write_explorer(library / "emb", tmp_path, k=1, color="playlist", melon=library / "melon",
                           projection="pca")
    data = page_data(tmp_path / "index.html")
    lists = [p for s in ("train", "val", "test") for p in read_playlists(MelonLayout(library / "melon").playlists(s))]
    on_map = {int(t.split("/")[1]) for t in data["ids"]}
    for r, track in enumerate(data["ids"]):
        song = int(track.split("/")[1])
        mine = [p for p in lists if song in p["songs"]]
        best = max(mine, key=lambda p: (len(set(p["songs"]) & on_map), -p["id"]), default=None)
        assert data["labels"][r] == (best["plylst_title"] or f"playlist {best['id']}" if best else "unknown")


def test_names_cannot_end_the_data_script():
    obj = {"names": ["</script><script>alert(1)</script>", "a</b"]}
    text = page._json_script(obj)
    assert "</" not in text and json.loads(text) == obj
