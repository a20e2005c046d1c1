"""`python -m cmir_tf.similar` with a damaged, edited or mismatched saved index, or an index location
that cannot be written: one `error:` line naming the file, exit code 2 — never a wrong answer."""
import json
from pathlib import Path

import numpy as np
import pytest

from cmir_tf import similar
from cmir_tf.errors import DataError
from cmir_tf.similar import SimilarityIndex
from cmir_tf.similar import index as similar_index
from cmir_tf.similar import main

REBUILD = "; delete the index and its .ids.json to rebuild it"


@pytest.fixture
def built(tmp_path, capsys):
    """20 tracks of 8-d vectors and an index saved by the CLI; returns (folder, index, ids file, answer)."""
    emb = tmp_path / "emb"
    emb.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        np.save(emb / f"t{i:02d}.npy", rng.normal(size=8).astype(np.float32))
    index = tmp_path / "idx.ann"
    assert main([str(emb), "--id", "t00", "-k", "3", "--index", str(index)]) == 0
    answer = capsys.readouterr().out
    return emb, index, Path(str(index) + ".ids.json"), answer


def _query(built, capsys):
    emb, index, _, _ = built
    code = main([str(emb), "--id", "t00", "-k", "3", "--index", str(index)])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(built, capsys) -> str:
    code, out, err = _query(built, capsys)
    assert code == 2 and out == "", (code, out)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _edit(meta_path, change, *, recompute=False):
    meta = json.loads(meta_path.read_text())
    change(meta)
    if recompute:  # a forged ids file: consistent in itself, so only the annoy-level checks can see it
        meta["checksum"] = similar_index._checksum(meta)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("change", [
    lambda m: m.update(ids=m["ids"][::-1]),               # reordered: before, wrong answers with exit 0
    lambda m: m.update(ids=m["ids"][:-3], n_items=17),    # fewer ids: before, an IndexError traceback
    lambda m: m.update(ids=m["ids"] + ["x1", "x2"]),      # more ids than items: before, exit 0 silently
    lambda m: m.update(dim=16),                           # wrong dim: before, an OSError traceback
], ids=["reordered", "fewer-ids", "more-ids", "wrong-dim"])
def test_edited_ids_file_is_refused(built, capsys, change):
    _edit(built[2], change)
    assert _refused(built, capsys) == (f"error: {built[2]}: ids or settings do not match their checksum (edited, "
                                       f"reordered or damaged){REBUILD}")


def test_ids_file_without_dim_is_one_line(built, capsys):
    """Before: SimilarityIndex.load ended in KeyError: 'dim'."""
    _edit(built[2], lambda m: m.pop("dim"))
    with pytest.raises(DataError, match=r"idx\.ann\.ids\.json: index ids file has no 'dim'"):
        SimilarityIndex.load(built[1])
    assert _refused(built, capsys) == (f"error: {built[2]}: index ids file has no 'dim' (damaged, or written by "
                                       f"an older cmir_tf){REBUILD}")


@pytest.mark.parametrize("keep", [0.5, "node"], ids=["mid-node", "node-boundary"])
def test_truncated_index_file_is_refused(built, capsys, keep):
    """Before: mid-node, an OSError traceback; at a node boundary, answers from a partial index, exit 0."""
    index = built[1]
    data = index.read_bytes()
    cut = len(data) // 2 + 3 if keep == 0.5 else 5 * (12 + 4 * 8)  # annoy angular node: 12 + 4·dim bytes
    index.write_bytes(data[:cut])
    assert _refused(built, capsys) == (f"error: {index}: index file has {cut} bytes, idx.ann.ids.json records "
                                       f"{len(data)} (truncated, damaged or replaced){REBUILD}")


def test_index_file_with_a_changed_byte_is_refused(built, capsys):
    """A damaged index file of the right size (one vector component changed): before, its answers were
    taken as they came."""
    index = built[1]
    data = bytearray(index.read_bytes())
    data[12 + 4 * 3] ^= 0x40  # item 0's fourth component (after n_descendants and the two children)
    index.write_bytes(bytes(data))
    assert _refused(built, capsys) == (f"error: {index}: index file content differs from the one idx.ann.ids.json "
                                       f"records (truncated, damaged or replaced){REBUILD}")


def test_forged_ids_file_meets_the_annoy_checks(built, capsys):
    """Defence in depth: an ids file whose checksum was recomputed after the edit."""
    _, index, meta_path, _ = built
    _edit(meta_path, lambda m: m.update(dim=16), recompute=True)
    err = _refused(built, capsys)
    assert err.startswith(f"error: {index}: not a readable 16-d annoy index (") and err.endswith(REBUILD)
    _edit(meta_path, lambda m: m.update(dim=8, ids=m["ids"] + ["x1"], n_items=21), recompute=True)
    assert _refused(built, capsys) == f"error: {index}: index holds 20 items, idx.ann.ids.json lists 21 ids{REBUILD}"


def test_index_built_with_other_trees_is_rebuilt(built, capsys):
    emb, index, meta_path, _ = built
    assert main([str(emb), "--id", "t00", "-k", "3", "--index", str(index), "--trees", "7"]) == 0
    assert f"{index}: the index has 50 trees, 7 asked; rebuilding" in capsys.readouterr().err
    assert json.loads(meta_path.read_text())["n_trees"] == 7


# ----------------------------------------------------------------------- the index location, first
def test_index_location_is_checked_before_the_folder_is_read(built, tmp_path, capsys):
    """Before: a folder under a file failed with a traceback when saving, after the index was built; an
    index path that is a folder said 'index file or its ids.json is missing'."""
    emb = built[0]
    np.save(emb / "zz_bad.npy", np.zeros(8, np.float32))  # reading the folder would fail on this file
    (tmp_path / "f").write_text("a file")
    assert main([str(emb), "--id", "t00", "--index", str(tmp_path / "f" / "idx.ann")]) == 2
    assert capsys.readouterr().err == f"error: index file {tmp_path / 'f' / 'idx.ann'}: {tmp_path / 'f'} is a file, not a folder\n"
    (tmp_path / "d").mkdir()
    assert main([str(emb), "--id", "t00", "--index", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err == f"error: index file {tmp_path / 'd'}: is a folder, not a file\n"


def test_zero_trees_is_refused(built, capsys):
    """Before: an index of no trees was built and answered nothing, with exit code 0."""
    assert main([str(built[0]), "--id", "t00", "--trees", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: the number of annoy trees must be at least 1, got 0\n"


def test_ids_that_are_not_utf8_are_indexed_saved_and_reused(tmp_path, capsys):
    """Embeddings named by non-UTF-8 bytes (b'caf\\xe9', as embed writes them for such audio): the index is
    saved (its ids file holds \\udce9 escapes), reused, and answers the same; before: a traceback."""
    import os

    emb = os.path.join(os.fsencode(tmp_path), b"emb")
    os.mkdir(emb)
    rng = np.random.default_rng(1)
    vectors = {name: rng.normal(size=8).astype(np.float32) for name in (b"a", b"caf\xe9", b"b", b"c")}
    for name, v in vectors.items():
        np.save(os.fsdecode(os.path.join(emb, name + b".mean.npy")), v)
    index = tmp_path / "idx.ann"
    args = [os.fsdecode(emb), "--id", os.fsdecode(b"caf\xe9"), "-k", "3", "--index", str(index), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    want = sorted((n for n in vectors if n != b"caf\xe9"), key=lambda n: -float(
        vectors[n] @ vectors[b"caf\xe9"] / np.linalg.norm(vectors[n]) / np.linalg.norm(vectors[b"caf\xe9"])))
    assert [os.fsencode(h["id"]) for h in first] == want
    ids = json.loads(Path(str(index) + ".ids.json").read_text(encoding="ascii"))["ids"]
    assert sorted(os.fsencode(i) for i in ids) == sorted(vectors)
    stamp = index.stat().st_mtime_ns
    assert main(args) == 0 and json.loads(capsys.readouterr().out) == first
    assert index.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert main([os.fsdecode(emb), "--id", os.fsdecode(b"a"), "--index", str(index), "--json"]) == 0
    assert os.fsencode(json.loads(capsys.readouterr().out)[0]["id"]) in vectors
    assert main([os.fsdecode(emb), "--id", "a", "-k", "3", "--index", str(index)]) == 0
    assert "\tcaf\\xe9\n" in capsys.readouterr().out  # the table shows the byte escaped, printable anywhere
