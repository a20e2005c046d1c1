"""`python -m cmir_tf.evaluate` on hostile folders: every case ends as one `error:` line naming the file
(and the entry) with exit code 2 before anything is embedded, or — an undecodable audio file — as one
`skipped` line, a completed run and exit code 1 (partial results)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from downstream_data import SignalEmbedder, gtzan, tone  # noqa: F401 (fixture)

from cmir_tf import evaluate as ev
from cmir_tf.errors import DataError
from cmir_tf.evaluate import __main__ as evaluate_cli
from cmir_tf.evaluate.cache import Model
from cmir_tf.evaluate.gtzan import GTZAN_GENRES, GTZAN_LISTS

HEADER = b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


class Counting:
    """A fake model's embedder that must not be called when a run is refused up front."""

    def __init__(self, bad=()):
        self.calls, self.bad, self.signal = 0, {str(b) for b in bad}, SignalEmbedder()

    def __call__(self, path):
        self.calls += 1
        if path in self.bad:
            raise DataError(f"{path}: not a readable audio file (format not recognised)")
        return self.signal(path)


@pytest.fixture
def fake(monkeypatch):
    emb = Counting()
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, emb, key="fake"))
    return emb


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _jamendo(tmp_path, train_rows: bytes, *, header=HEADER, eol=b"\r\n"):
    """An audio folder with 01/1.mp3 and a genre split whose train TSV has ``train_rows`` after ``header``."""
    audio, splits = tmp_path / "audio", tmp_path / "split"
    (audio / "01").mkdir(parents=True)
    (audio / "01" / "1.mp3").write_bytes(b"not decoded: the run must stop before")
    splits.mkdir()
    good = header + eol + b"track_1\ta\tb\t01/1.mp3\t3.0\tgenre---rock" + eol
    for s in ("train", "validation", "test"):
        (splits / f"autotagging_genre-{s}.tsv").write_bytes(header + eol + train_rows if s == "train" else good)
    return audio, splits


def _jamendo_argv(audio, splits, tmp_path):
    return ["jamendo", "--model", "m", "--jamendo", str(audio), "--splits", str(splits), "--categories", "genre",
            "--runs", "1", "--quiet", "--cache", str(tmp_path / "cache")]


# ---------------------------------------------------------------- §2 paths from data escape their folders
@pytest.mark.parametrize("entry, how", [
    ("../outside.wav", "points outside {audio} (absolute or with '..')"),
    ("01/../../outside.wav", "points outside {audio} (absolute or with '..')"),
    ("/etc/passwd", "points outside {audio} (absolute or with '..')"),
    ("01/link.mp3", "resolves outside {audio} (a symbolic link)"),
])
def test_jamendo_path_outside_the_audio_folder_refuses_the_list(tmp_path, fake, capsys, entry, how):
    """Before: the file outside was opened (and listed in skipped). After: the whole TSV is refused,
    naming it, the line and the entry, before any embedding."""
    (tmp_path / "outside.wav").write_bytes(b"x")
    audio, splits = _jamendo(tmp_path, b"track_1\ta\tb\t" + entry.encode() + b"\t3.0\tgenre---rock\r\n")
    (audio / "01" / "link.mp3").symlink_to(tmp_path / "outside.wav")
    assert ev.main(_jamendo_argv(audio, splits, tmp_path)) == 2
    assert _one_error_line(capsys) == (f"error: {splits / 'autotagging_genre-train.tsv'}:2: entry {entry!r} "
                                       f"{how.format(audio=audio)}; refused")
    assert fake.calls == 0


def _gtzan_lists(tmp_path, gtzan, train: bytes):
    root, splits = gtzan
    bad = tmp_path / "splits"
    bad.mkdir()
    for name in GTZAN_LISTS.values():
        (bad / name).write_bytes((splits / name).read_bytes())
    (bad / GTZAN_LISTS["train"]).write_bytes(b"blues/blues.00000.wav\n" + train)
    return root, bad


def _gtzan_argv(root, splits, tmp_path, *extra):
    return ["gtzan", "--model", "m", "--gtzan", str(root), "--splits", str(splits), "--runs", "1", "--quiet",
            "--cache", str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("entry", ["../...wav", "/etc/passwd"])
def test_gtzan_entry_outside_the_audio_folder_refuses_the_list(gtzan, tmp_path, fake, capsys, entry):
    """`../...wav` passed the genre/name check and opened GTZAN/...wav (outside genres/)."""
    root, splits = _gtzan_lists(tmp_path, gtzan, entry.encode() + b"\n")
    (root / "...wav").write_bytes(b"x")
    try:
        assert ev.main(_gtzan_argv(root, splits, tmp_path)) == 2
    finally:
        (root / "...wav").unlink()
    assert _one_error_line(capsys) == (f"error: {splits / 'train_filtered.txt'}:2: entry {entry!r} points outside "
                                       f"{root / 'genres'} (absolute or with '..'); refused")
    assert fake.calls == 0


# ------------------------------------------------------------------ §6 output locations, checked first
def test_out_that_is_a_file_fails_before_any_work(gtzan, tmp_path, fake, capsys):
    """Before: a traceback (FileExistsError) after all the embedding and training."""
    root, splits = gtzan
    (tmp_path / "out").write_text("a file")
    assert ev.main(_gtzan_argv(root, splits, tmp_path, "--out", str(tmp_path / "out"))) == 2
    assert _one_error_line(capsys) == f"error: --out {tmp_path / 'out'}: is a file, not a folder"
    assert ev.main(["all", "--models", "a=x", "--gtzan", str(root), "--gtzan-splits", str(splits), "--quiet",
                    "--no-cache", "--out", str(tmp_path / "out" / "report")]) == 2
    assert _one_error_line(capsys) == (f"error: --out {tmp_path / 'out' / 'report'}: {tmp_path / 'out'} is a file, "
                                       "not a folder")
    assert fake.calls == 0


def test_report_folder_holding_a_folder_named_like_a_report_file(gtzan, tmp_path, fake, capsys):
    root, splits = gtzan
    (tmp_path / "report" / "report.md").mkdir(parents=True)
    assert ev.main(["all", "--models", "a=x", "--gtzan", str(root), "--gtzan-splits", str(splits), "--quiet",
                    "--no-cache", "--out", str(tmp_path / "report")]) == 2
    assert _one_error_line(capsys) == (f"error: --out {tmp_path / 'report'}: {tmp_path / 'report' / 'report.md'} "
                                       "is a folder, not a file")
    assert fake.calls == 0


def test_cache_that_is_a_file_fails_before_any_work(gtzan, tmp_path, fake, capsys):
    """Before: every audio file was reported unreadable ("Not a directory"), then 'no readable track'."""
    root, splits = gtzan
    (tmp_path / "cache").write_text("a file")
    assert ev.main(_gtzan_argv(root, splits, tmp_path)) == 2
    assert _one_error_line(capsys) == f"error: --cache {tmp_path / 'cache'}: is a file, not a folder"
    assert fake.calls == 0


def _unwritable_folder(tmp_path):
    """A folder no file can be created in: a read-only folder, or (as root, who ignores modes) /sys."""
    if os.geteuid() != 0:
        d = tmp_path / "read-only"
        d.mkdir(mode=0o500)
        return d
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return "/sys"
    os.close(fd)
    os.unlink(probe)
    pytest.skip("no folder here refuses a new file")


def test_out_and_cache_that_cannot_be_written_fail_before_any_work(gtzan, tmp_path, fake, capsys):
    """Before: the report was lost at the end (--out); every file 'unreadable' (--cache)."""
    root, splits = gtzan
    ro = _unwritable_folder(tmp_path)
    assert ev.main(_gtzan_argv(root, splits, tmp_path, "--out", str(ro))) == 2
    assert _one_error_line(capsys).startswith(f"error: --out {ro}: cannot write into the folder {ro} (")
    argv = _gtzan_argv(root, splits, tmp_path)
    argv[argv.index("--cache") + 1] = str(ro)
    assert ev.main(argv) == 2
    assert _one_error_line(capsys).startswith(f"error: --cache {ro}: cannot write into the folder {ro} (")
    assert fake.calls == 0


# ----------------------------------------------------------------- §7 malformed lists: one line each
@pytest.mark.parametrize("rows, expected", [
    (b"track_1\ta\tb\t01/1.mp3\t3.0\tgenre---r\xf6ck\r\n",
     "autotagging_genre-train.tsv:2: MTG-Jamendo split file is not UTF-8 text (byte 35 of the line is 0xf6)"),
    (b"track_1\ta\tb\t01/1.mp3\r\n",
     "autotagging_genre-train.tsv:2: 4 columns, expected TRACK_ID ... PATH DURATION TAGS..."),
])
def test_jamendo_bad_rows(tmp_path, fake, capsys, rows, expected):
    """Non-UTF-8 bytes: a UnicodeDecodeError traceback before. Too few columns: already one line."""
    audio, splits = _jamendo(tmp_path, rows)
    assert ev.main(_jamendo_argv(audio, splits, tmp_path)) == 2
    assert _one_error_line(capsys) == f"error: {splits / expected}"
    assert fake.calls == 0


@pytest.mark.parametrize("header, expected", [
    (b"", ": empty file (expected the header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS, tab-separated)"),
    (b"TRACK_ID\tARTIST_ID\tALBUM_ID\tFILE\tDURATION\tTAGS",
     ":1: header column 4 is 'FILE', expected 'PATH' (header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS, "
     "tab-separated)"),
    (b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION",
     ":1: header has 5 column(s), no TAGS; expected TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS (tab-separated)"),
])
def test_jamendo_bad_header_names_the_column(tmp_path, fake, capsys, header, expected):
    """Before: 'header is not TRACK_ID …' whatever was wrong, even for an empty file."""
    audio, splits = _jamendo(tmp_path, b"", header=header, eol=b"\r\n" if header else b"")
    assert ev.main(_jamendo_argv(audio, splits, tmp_path)) == 2
    assert _one_error_line(capsys) == f"error: {splits / 'autotagging_genre-train.tsv'}{expected}"
    assert fake.calls == 0


def test_jamendo_tsv_saved_by_a_spreadsheet_is_read(tmp_path):
    """A byte-order mark and LF/CRLF mixed line ends: read as the same rows (the BOM was a header error)."""
    from cmir_tf.evaluate.jamendo import read_jamendo

    rows = b"track_1\ta\tb\t01/1.mp3\t3.0\tgenre---rock\ntrack_2\ta\tb\t01/1.mp3\t3.0\tgenre---pop\tgenre---jazz\r\n"
    audio, splits = _jamendo(tmp_path, rows, header=b"\xef\xbb\xbf" + HEADER)
    train = read_jamendo(audio, splits, "genre")["train"]
    assert train == [("track_1", audio / "01" / "1.mp3", ["genre---rock"]),
                     ("track_2", audio / "01" / "1.mp3", ["genre---pop", "genre---jazz"])]


@pytest.mark.parametrize("line, expected", [
    (b"blues/blues.00001.wav\xff\n", ":3: GTZAN split list is not UTF-8 text (byte 22 of the line is 0xff)"),
    (b"country/country.00000.wav\nfoo/foo.00000.wav\n",
     ":4: genre folder 'foo' is not one of the 10 GTZAN genres (" + ", ".join(GTZAN_GENRES) + ")"),
])
def test_gtzan_bad_list_line(gtzan, tmp_path, fake, capsys, line, expected):
    """Non-UTF-8: a traceback before. A foreign genre folder (here present on disk): silently an 11th class."""
    root, splits = _gtzan_lists(tmp_path, gtzan, b"blues/blues.00001.wav\n" + line)
    foo = root / "genres" / "foo"
    foo.mkdir()
    (foo / "foo.00000.wav").write_bytes((root / "genres" / "rock" / "rock.00000.wav").read_bytes())
    try:
        assert ev.main(_gtzan_argv(root, splits, tmp_path)) == 2
    finally:
        shutil.rmtree(foo)
    assert _one_error_line(capsys) == f"error: {splits / 'train_filtered.txt'}{expected}"
    assert fake.calls == 0


# ------------------------------------------------------ unreadable audio: one line, the run completes
def test_unreadable_file_is_one_line_and_exit_code_1(gtzan, tmp_path, monkeypatch, capsys):
    """Before: exit 0 although results were partial, and only the first skipped file was named."""
    root, splits = gtzan
    bad = [root / "genres" / "jazz" / "jazz.00006.wav", root / "genres" / "pop" / "pop.00001.wav"]
    emb = Counting(bad)
    monkeypatch.setattr(evaluate_cli, "load_model", lambda name, d: Model(name, emb, key="fake"))
    assert ev.main(_gtzan_argv(root, splits, tmp_path, "--out", str(tmp_path / "out"))) == 1
    out, err = capsys.readouterr()
    reason = "not a readable audio file (format not recognised)"
    assert err.splitlines() == [f"m gtzan: skipped {bad[1]}: {reason}", f"m gtzan: skipped {bad[0]}: {reason}",
                                "2 unreadable input file(s) skipped (each named above); the results are partial "
                                "(exit code 1)"]
    assert out.endswith(", 29 test tracks, 2 unreadable file(s) skipped\n")
    saved = json.loads((tmp_path / "out" / "gtzan.json").read_text())["result"]
    assert sorted(s["path"] for s in saved["skipped"]) == sorted(map(str, bad))
    assert saved["n_train_tracks"] == 39 and saved["n_test_tracks"] == 29


def _real_gtzan(root):
    """3 genres × 3 tracks of real audio written by libsndfile (wav and ogg), 6 s at 22050 Hz; one listed
    'wav' of the test split is a text file."""
    import soundfile

    rng = np.random.default_rng(3)
    lists = {"train": [], "valid": [], "test": []}
    for gi, g in enumerate(GTZAN_GENRES[:3]):
        (root / "genres" / g).mkdir(parents=True)
        for n in range(3):
            ext = "ogg" if n == 1 else "wav"
            rel = f"{g}/{g}.{n:05d}.{ext}"
            x = 0.5 * tone([200 + 150 * gi, 400 + 300 * gi], 6.0, 22050, rng)
            soundfile.write(root / "genres" / rel, x.astype(np.float32), 22050,
                            format=ext.upper(), subtype="VORBIS" if ext == "ogg" else "PCM_16")
            lists["test" if n == 2 else "train"].append(rel)
    text = root / "genres" / "disco" / "disco.00009.wav"
    (root / "genres" / "disco").mkdir()
    text.write_text("not audio")
    lists["test"].append("disco/disco.00009.wav")
    lists["valid"] = lists["test"][:1]
    splits = root / "splits"
    splits.mkdir()
    for split, name in GTZAN_LISTS.items():
        (splits / name).write_text("\n".join(lists[split]) + "\n")
    return splits, text


@pytest.mark.slow
def test_text_file_named_wav_among_real_audio_through_an_export(tmp_path):
    """The real CLI in a child process on a real export: the text file is one `skipped` line naming it,
    the run completes with the other 9 files, the summary counts it, exit code 1. Before (tensorflow-io
    decoding, reading threads): the process died of a segfault (exit -11) in about one run in four, else
    exited 0; with libsndfile's decoder it passes every time."""
    tf = pytest.importorskip("tensorflow")
    from cmir_tf import export
    from cmir_tf.model.encoders import AudioEncoder

    tf.keras.utils.set_random_seed(0)
    enc = AudioEncoder()
    enc(tf.zeros([1, 256, 48]))
    export.export_model(enc, None, [], str(tmp_path / "exp"), version=1, name="rand")
    root = tmp_path / "gtzan"
    splits, text = _real_gtzan(root)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "cmir_tf.evaluate", "gtzan", "--model", str(tmp_path / "exp"),
                           "--gtzan", str(root), "--splits", str(splits), "--runs", "1", "--gtzan-max-iter", "20",
                           "--quiet", "--no-cache", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    named = [line for line in proc.stderr.splitlines() if str(text) in line]
    assert len(named) == 1 and named[0].startswith(f"exp gtzan: skipped {text}: "), proc.stderr
    assert proc.stdout.endswith(", 3 test tracks, 1 unreadable file(s) skipped\n"), proc.stdout
    result = json.loads((tmp_path / "out" / "gtzan.json").read_text())["result"]
    assert [s["path"] for s in result["skipped"]] == [str(text)]
    assert result["n_train_tracks"] == 6 and result["embedded"] == 9
