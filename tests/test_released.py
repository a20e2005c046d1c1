"""The authors' released checkpoints: `export --published-checkpoint` and `embed --published-frontend`.

The PyTorch side runs under $CMIR_TEST_TORCH_PYTHON (tests/torch_side.py): the published
AudioEncoder, written here from the public description of andrebola/contrastive-mir-learning's
``models.py`` (BatchNorm2d(1) on the (B, 1, 48 bands, 256 frames) input; 7 blocks Conv2d 3×3 pad 1 →
BatchNorm2d → ReLU → MaxPool2d with channels 128, 128, 256, 256, 256, 256, 512 and pools 2, 2, 2, 2,
(1, 2), (1, 2), 2; flatten → Linear 1024→512 → BatchNorm1d → ReLU → Dropout 0.5 → Linear 512→128 →
LayerNorm eps 1e-6; forward returns (features, embedding)), with random weights and random BatchNorm
statistics, saved with torch.save in both serialisations.
"""
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from torch_side import run_torch  # noqa: E402

from cmir_tf import constants as C  # noqa: E402
from cmir_tf.embed import main as embed_main  # noqa: E402
from cmir_tf.embed import published as published_frontend
from cmir_tf.errors import DataError  # noqa: E402
from cmir_tf.export import main as export_main  # noqa: E402
from cmir_tf.export import torch_pickle  # noqa: E402
from cmir_tf.export import released

PUBLISHED_MODEL = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x):
        return self.pool(torch.relu(self.bn(self.conv(x))))

class PublishedAudioEncoder(nn.Module):
    def __init__(self, dim=128):
        super().__init__()
        widths = [1, 128, 128, 256, 256, 256, 256, 512]
        pools = [2, 2, 2, 2, (1, 2), (1, 2), 2]
        blocks = [Block(widths[i], widths[i + 1], pools[i]) for i in range(7)]
        self.audio_encoder = nn.Sequential(nn.BatchNorm2d(1), *blocks, nn.Flatten())
        self.fc_audio = nn.Sequential(nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
                                      nn.Linear(512, dim), nn.LayerNorm(dim, eps=1e-6))

    def forward(self, x):
        z = self.audio_encoder(x)
        return z, self.fc_audio(z)

def run(model, mel):
    # mel (P, 256 frames, 48 bands), as cmir_tf feeds it -> (P, 1, 48, 256), as encode.py feeds it
    x = torch.from_numpy(np.ascontiguousarray(mel.transpose(0, 2, 1)[:, None], np.float32))
    with torch.no_grad():
        z, z_d = model.eval()(x)
    return z.numpy(), z_d.numpy()
"""

MAKE_CHECKPOINTS = PUBLISHED_MODEL + """
torch.manual_seed(20)
model = PublishedAudioEncoder()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    model.audio_encoder[0].running_mean.fill_(-40.0)   # the input BN sees dB values
    model.audio_encoder[0].running_var.fill_(225.0)
model.audio_encoder[0].num_batches_tracked += 7
state = model.state_dict()
torch.save(state, str(WORKDIR / "legacy" / "contrastive_MF_gnr" / "audio_encoder.pt"),
           _use_new_zipfile_serialization=False)
torch.save(state, str(WORKDIR / "zip" / "baseline_gnr" / "audio_encoder.pt"))
z, z_d = run(model, load("mel"))
save("features", z)
save("embeddings", z_d)
save("n_entries", np.array(len(state)))
"""

FORMATS = {"legacy": "contrastive_MF_gnr", "zip": "baseline_gnr"}


def _mel(patches, seed=0):
    return np.random.default_rng(seed).normal(-40, 15, (patches, C.PATCH_FRAMES, C.N_BANDS)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Both serialisations of one random published AudioEncoder, and PyTorch's outputs on 3 patches."""
    work = tmp_path_factory.mktemp("torch_ckpt")
    side = work / "torch_side"  # the snippet's WORKDIR (tests/torch_side.py)
    for fmt, experiment in FORMATS.items():
        (side / fmt / experiment).mkdir(parents=True)
    mel = _mel(3)
    out = run_torch(MAKE_CHECKPOINTS, {"mel": mel}, work)
    paths = {fmt: side / fmt / experiment / "audio_encoder.pt" for fmt, experiment in FORMATS.items()}
    return paths, mel, out


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each checkpoint imported with the command (ONNX for the legacy one only, to save time)."""
    paths, _, _ = checkpoints
    root = tmp_path_factory.mktemp("published_exports")
    done = {}
    for fmt, path in paths.items():
        out = root / fmt
        onnx = ["--onnx"] if fmt == "legacy" else ["--no-onnx"]
        assert export_main(["--published-checkpoint", str(path), "--out", str(out), "--name", "enc", *onnx]) == 0
        done[fmt] = out
    return done


def test_reader_gives_pytorchs_state_dict_in_both_serialisations(checkpoints):
    paths, _, out = checkpoints
    legacy, zipped = (released.read_state_dict(paths[f]) for f in ("legacy", "zip"))
    assert zipfile.is_zipfile(paths["zip"]) and not zipfile.is_zipfile(paths["legacy"])
    assert list(legacy) == list(zipped) == released.expected_keys()
    assert len(legacy) == int(out["n_entries"]) == 65
    for k in legacy:
        np.testing.assert_array_equal(legacy[k], zipped[k])
    assert legacy["audio_encoder.0.num_batches_tracked"].dtype == np.int64
    assert int(legacy["audio_encoder.0.num_batches_tracked"]) == 7
    assert legacy["fc_audio.0.weight"].shape == (512, 1024)
    assert sum(v.size for k, v in legacy.items() if "running" not in k and "num_batches" not in k) == 3_989_762


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_serving_signature_equals_pytorch(exports, checkpoints, fmt):
    _, mel, want = checkpoints
    m = tf.saved_model.load(str(exports[fmt] / "saved_model" / "1"))
    assert sorted(m.signatures) == ["embed_waveform", "serving_default"]  # no genre encoder is released
    got = m.signatures["serving_default"](melspectrogram=tf.constant(mel))
    np.testing.assert_allclose(got["embeddings"].numpy(), want["embeddings"], atol=1e-4, rtol=0)
    feats = got["features"].numpy()  # cmir_tf's frame-major flatten; PyTorch's is channel-major
    np.testing.assert_allclose(released.torch_feature_order(feats), want["features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(feats[:, :512], want["features"][:, 0::2], atol=1e-4, rtol=0)  # frame 0, by hand
    assert np.abs(want["embeddings"]).max() > 0.5  # not a degenerate comparison


def test_metadata_names_the_paper_experiment_and_licence(exports, checkpoints):
    paths, _, _ = checkpoints
    for fmt, experiment in FORMATS.items():
        meta = json.loads((exports[fmt] / "enc.json").read_text(encoding="utf-8"))
        assert "Enriched Music Representations" in meta["description"]
        assert experiment in meta["description"] and "MIT licence" in meta["description"]
        assert "10.1109/LSP.2021.3071082" in meta["citation"]
        pub = meta["cmir_tf"]["published"]
        assert pub["experiment"] == experiment and pub["licence"] == "MIT"
        assert pub["repository"].endswith("andrebola/contrastive-mir-learning")
        assert pub["sha256"] == released._sha256(paths[fmt])
        assert meta["cmir_tf"]["mode"] == "published"
        want = {"frozen_model", "SavedModel", "keras"} | ({"onnx"} if fmt == "legacy" else set())
        assert set(meta["model_types"]) == want
        for rel in meta["cmir_tf"]["files"].values():
            assert (exports[fmt] / rel).exists()


def test_onnx_and_keras_files_equal_pytorch(exports, checkpoints):
    ort = pytest.importorskip("onnxruntime")
    import keras

    _, mel, want = checkpoints
    sess = ort.InferenceSession(str(exports["legacy"] / "enc.onnx"), providers=["CPUExecutionProvider"])
    emb, feat = sess.run(["embeddings", "features"], {"melspectrogram": mel})
    np.testing.assert_allclose(emb, want["embeddings"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(released.torch_feature_order(feat), want["features"], atol=1e-4, rtol=0)
    kmodel = keras.saving.load_model(str(exports["zip"] / "enc.keras"))
    np.testing.assert_allclose(np.asarray(kmodel(mel)["embeddings"]), want["embeddings"], atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_essentia_runs_the_imported_graph_like_pytorch(exports, checkpoints, fmt, tmp_path):
    import essentia_ref

    if not essentia_ref.essentia_available():
        pytest.skip("essentia-tensorflow is not installed (pip install -e .[test])")
    _, mel, want = checkpoints
    whole = np.concatenate([mel[0], mel[1], mel[2][:100]])  # 612 frames: Essentia cuts 2 patches
    got_emb, got_feat = essentia_ref.essentia_predict2d(exports[fmt] / "enc.pb", whole, "melspectrogram",
                                                        ["embeddings", "features"], tmp_path, patch_hop_size=256)
    np.testing.assert_allclose(got_emb, want["embeddings"][:2], atol=1e-4, rtol=0)
    np.testing.assert_allclose(released.torch_feature_order(got_feat), want["features"][:2], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------- hostile files
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fc_audio.0.weight": _RunsCode(marker)}, protocol=2)
    zipped = tmp_path / "contrastive_gnr" / "audio_encoder.pt"
    zipped.parent.mkdir()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("audio_encoder/data.pkl", payload)
        z.writestr("audio_encoder/version", "3\n")
    legacy = tmp_path / "legacy.pt"  # the legacy layout: magic number, protocol, sys info, then the object
    legacy.write_bytes(b"".join(pickle.dumps(o, protocol=2) for o in (torch_pickle.LEGACY_MAGIC, 1001, {}))
                       + payload)
    for path in (zipped, legacy):
        out = tmp_path / f"out_{path.stem}"
        code = export_main(["--published-checkpoint", str(path), "--experiment", "contrastive_gnr", "--out", str(out)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(lines) == 1 and lines[0].startswith("error: ") and "posix.system" in lines[0], lines
        assert "nothing in it was run" in lines[0]
        assert not marker.exists() and not out.exists()
    pickle.loads(payload)  # control: the payload does run code when unpickled without restriction
    assert marker.exists()


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint at all", "neither a zip archive nor a legacy torch.save file"),
    (pickle.dumps([1, 2, 3], protocol=2), "neither a zip archive nor a legacy torch.save file"),
])
def test_unreadable_checkpoint_is_a_data_error(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason):
        released.read_state_dict(path)


def test_checkpoint_with_other_weights_is_refused(tmp_path, capsys):
    import collections

    # a state_dict-shaped legacy file of the wrong model: the reader accepts it, the mapping refuses it
    path = tmp_path / "baseline_MF" / "audio_encoder.pt"
    path.parent.mkdir()
    path.write_bytes(b"".join(pickle.dumps(o, protocol=2) for o in
                              (torch_pickle.LEGACY_MAGIC, 1001, {}, collections.OrderedDict(), [])))
    assert released.read_state_dict(path) == {}
    assert export_main(["--published-checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a published AudioEncoder state_dict" in err[0]
    assert not (tmp_path / "o").exists()


def test_experiment_must_be_named_or_come_from_the_folder(tmp_path, capsys):
    path = tmp_path / "somewhere" / "audio_encoder.pt"
    path.parent.mkdir()
    path.write_bytes(b"")
    assert export_main(["--published-checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "--experiment" in capsys.readouterr().err
    assert export_main(["--published-checkpoint", str(path), "--experiment", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "contrastive_MF_gnr" in capsys.readouterr().err
    assert export_main(["--out", str(tmp_path / "o")]) == 2
    assert "exactly one of --run" in capsys.readouterr().err
    assert export_main(["--run", str(tmp_path), "--experiment", "baseline_MF", "--out", str(tmp_path / "o")]) == 2
    assert "--experiment: only with --published-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- published front end
AUTHORS_CHAIN = PUBLISHED_MODEL + """
model = PublishedAudioEncoder()
model.load_state_dict(torch.load(str(WORKDIR / "audio_encoder.pt"), weights_only=True))
model.eval()
with torch.no_grad():
    for name in ("centre", "shifted"):
        chunks = torch.from_numpy(load(name))          # (n, 48 bands, 256 frames), as encode.py frames them
        save(name, model(torch.unsqueeze(chunks, 1))[0].numpy())   # encode.py saves the first output
"""


def _write_wav16(path, x):
    import wave

    ints = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(C.SAMPLE_RATE)
        w.writeframes(ints.tobytes())
    return ints.astype(np.float32) / 32768  # what a decoder reads back


def _encode_py_chunks(mel_time_major):
    """librosa.util.frame(mel.T, frame_length=256, hop_length=256, axis=-1).permute(2, 0, 1), in NumPy."""
    bands_by_frames = mel_time_major.T
    n = 1 + (bands_by_frames.shape[1] - 256) // 256
    return np.stack([bands_by_frames[:, 256 * j:256 * j + 256] for j in range(n)]).astype(np.float32)


@pytest.mark.slow
def test_published_frontend_gives_what_encode_py_computes(exports, checkpoints, tmp_path, capsys):
    import essentia_ref

    if not essentia_ref.essentia_available():
        pytest.skip("essentia-tensorflow is not installed (pip install -e .[test])")
    paths, _, _ = checkpoints
    rng = np.random.default_rng(4)
    n = 465_600 + 12_345  # 29.87 s; the centre 29.1 s start at (n - 465,600) // 2 = 6,172
    block = np.arange(n) // 4000  # a new random tone and loudness every 0.25 s
    freq, amp = rng.uniform(100, 6000, block[-1] + 1)[block], rng.uniform(0.01, 0.5, block[-1] + 1)[block]
    x = amp * np.sin(2 * np.pi * freq * np.arange(n) / C.SAMPLE_RATE) + 0.01 * rng.normal(size=n)
    x = _write_wav16(tmp_path / "song.wav", x)
    start = (n - round(29.1 * 16000)) // 2
    assert start == 6172
    mels = essentia_ref.essentia_mel({"centre": x[start:start + 465_600],
                                      "shifted": x[start + 1280:start + 1280 + 465_600]}, tmp_path / "ess")
    chunks = {k: _encode_py_chunks(m) for k, m in mels.items()}
    assert chunks["centre"].shape == (7, 48, 256)  # 1820 frames → 7 patches, the tail of 28 dropped
    (tmp_path / "torch" / "torch_side").mkdir(parents=True)
    os.link(paths["zip"], tmp_path / "torch" / "torch_side" / "audio_encoder.pt")
    want = run_torch(AUTHORS_CHAIN, chunks, tmp_path / "torch")

    assert embed_main(["--model", str(exports["zip"]), str(tmp_path / "song.wav"), "--out", str(tmp_path / "o"),
                       "--published-frontend", "--no-progress"]) == 0
    got = np.load(tmp_path / "o" / "song.npy", allow_pickle=False)
    assert got.shape == (7, 1024)
    np.testing.assert_allclose(got, want["centre"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "o" / "song.mean.npy"), want["centre"].mean(0), atol=1e-4, rtol=0)
    # control: a cut 5 frames off moves the features 20× beyond the tolerance
    assert np.abs(want["shifted"] - want["centre"]).max() > 2e-3


def test_published_frontend_refuses_short_files_and_stored_mels(exports, tmp_path, capsys):
    x = 0.1 * np.random.default_rng(5).normal(size=465_599)  # one sample short of 29.1 s
    _write_wav16(tmp_path / "short.wav", x)
    _write_wav16(tmp_path / "long.wav", np.concatenate([x, x[:1]]))  # exactly 29.1 s
    np.save(tmp_path / "mel.npy", np.zeros((48, 2000), np.float32))
    code = embed_main(["--model", str(exports["zip"]), str(tmp_path / "short.wav"), str(tmp_path / "mel.npy"),
                       str(tmp_path / "long.wav"), "--out", str(tmp_path / "o"), "--published-frontend",
                       "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1
    assert len(err) == 2 and "short.wav" in err[0] and "shorter than the 29.1 s" in err[0]
    assert "mel.npy" in err[1] and "needs an audio file" in err[1]
    assert sorted(f for f in os.listdir(tmp_path / "o") if f != ".cmir-embed-outputs") == ["long.mean.npy", "long.npy"]
    assert np.load(tmp_path / "o" / "long.npy").shape == (7, 1024)


@pytest.mark.parametrize("n", [465_600, 465_601, 465_602, 1_000_003])
def test_centre_segment_is_encode_pys_cut(n):
    x = np.arange(n, dtype=np.float32)
    seg = published_frontend.centre_segment(x)
    assert seg.shape == (465_600,)
    assert seg[0] == (n - 465_600) // 2 and seg[-1] == seg[0] + 465_599


# ------------------------------------------------------------------- the reader without PyTorch
def _fake_checkpoint(path, tensors, storages, legacy=False):
    """A torch.save file written without torch (zip format, or LEGACY): TENSORS {name: (storage key,
    offset, size, stride)}, STORAGES {key: float32 array}. Stand-in modules named `torch` /
    `torch._utils` give the pickle the same globals torch writes."""
    import collections
    import io
    import types

    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (("storage", key), offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj[:1] == ("storage",) and len(obj) == 2:
                pid = ("storage", FloatStorage, obj[1], "cuda:0", storages[obj[1]].size)
                return pid + (None,) if legacy else pid  # legacy ids end with view_metadata
            return None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(collections.OrderedDict((k, Tensor(*v)) for k, v in tensors.items()))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    if legacy:  # magic number, protocol, sys info, the object, the storage keys; then each storage
        head = b"".join(pickle.dumps(o, protocol=2) for o in (torch_pickle.LEGACY_MAGIC, 1001, {"little_endian": True}))
        tail = pickle.dumps(sorted(storages), protocol=2)
        for key in sorted(storages):
            tail += np.int64(storages[key].size).tobytes() + np.asarray(storages[key], "<f4").tobytes()
        path.write_bytes(head + buf.getvalue() + tail)
        return
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ckpt/data.pkl", buf.getvalue())
        for key, arr in storages.items():
            z.writestr(f"ckpt/data/{key}", np.asarray(arr, "<f4").tobytes())


@pytest.mark.parametrize("legacy", [False, True])
def test_reader_follows_offsets_and_strides_without_torch(tmp_path, legacy):
    base = np.arange(12, dtype=np.float32)
    _fake_checkpoint(tmp_path / "a.pt", {"t": ("0", 0, (3, 4), (4, 1)), "col": ("0", 1, (3,), (4,)),
                                         "tt": ("0", 0, (4, 3), (1, 4)), "empty": ("0", 0, (0, 5), (5, 1)),
                                         "other": ("1", 0, (2,), (1,))},
                     {"0": base, "1": np.array([7, 8], np.float32)}, legacy=legacy)
    assert zipfile.is_zipfile(tmp_path / "a.pt") != legacy
    sd = torch_pickle.read_state_dict(tmp_path / "a.pt")
    assert list(sd) == ["t", "col", "tt", "empty", "other"]
    np.testing.assert_array_equal(sd["other"], [7, 8])
    np.testing.assert_array_equal(sd["t"], base.reshape(3, 4))
    np.testing.assert_array_equal(sd["col"], base.reshape(3, 4)[:, 1])
    np.testing.assert_array_equal(sd["tt"], base.reshape(3, 4).T)
    assert sd["empty"].shape == (0, 5)


@pytest.mark.parametrize("tensor, reason", [
    (("0", 2, (6,), (2,)), "exceeds its storage"),       # would read past the storage's memory
    (("0", 10, (2, 2), (2, 1)), "exceeds its storage"),
    (("0", 0, (10**12,), (0,)), "more elements than its storage"),  # 4 TB from 48 bytes
    (("0", 0, (3,), (-1,)), "malformed shape"),
    (("0", -1, (3,), (1,)), "malformed shape"),
])
def test_reader_refuses_views_outside_their_storage(tmp_path, tensor, reason):
    _fake_checkpoint(tmp_path / "b.pt", {"x": tensor}, {"0": np.zeros(12, np.float32)})
    with pytest.raises(DataError, match=reason):
        torch_pickle.read_state_dict(tmp_path / "b.pt")


def test_reader_refuses_a_truncated_legacy_file(tmp_path):
    _fake_checkpoint(tmp_path / "c.pt", {"x": ("0", 0, (12,), (1,))}, {"0": np.ones(12, np.float32)}, legacy=True)
    whole = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(whole[:-4])  # the last float is missing
    with pytest.raises(DataError, match="storage 0 announces 12 elements"):
        torch_pickle.read_state_dict(tmp_path / "c.pt")
