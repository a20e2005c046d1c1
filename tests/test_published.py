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
from cmir_tf import published, torch_pickle  # noqa: E402
from cmir_tf.embed import main as embed_main  # noqa: E402
from cmir_tf.errors import DataError  # noqa: E402
from cmir_tf.export import main as export_main  # noqa: E402

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
    for fmt, experiment in FORMATS.items():
        (work / fmt / experiment).mkdir(parents=True)
    mel = _mel(3)
    out = run_torch(MAKE_CHECKPOINTS, work, {"mel": mel}, ["features", "embeddings", "n_entries"])
    paths = {fmt: work / fmt / experiment / "audio_encoder.pt" for fmt, experiment in FORMATS.items()}
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
    legacy, zipped = (published.read_state_dict(paths[f]) for f in ("legacy", "zip"))
    assert zipfile.is_zipfile(paths["zip"]) and not zipfile.is_zipfile(paths["legacy"])
    assert list(legacy) == list(zipped) == published.expected_keys()
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
    np.testing.assert_allclose(published.torch_feature_order(feats), want["features"], atol=1e-4, rtol=0)
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
        assert pub["sha256"] == published._sha256(paths[fmt])
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
    np.testing.assert_allclose(published.torch_feature_order(feat), want["features"], atol=1e-4, rtol=0)
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
    np.testing.assert_allclose(published.torch_feature_order(got_feat), want["features"][:2], atol=1e-4, rtol=0)


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
def test_unreadable_checkpoint_is_one_error_line(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason):
        published.read_state_dict(path)


def test_checkpoint_with_other_weights_is_refused(tmp_path, capsys):
    import collections


    # a state_dict-shaped legacy file of the wrong model: the reader accepts it, the mapping refuses it
    path = tmp_path / "baseline_MF" / "audio_encoder.pt"
    path.parent.mkdir()
    path.write_bytes(b"".join(pickle.dumps(o, protocol=2) for o in
                              (torch_pickle.LEGACY_MAGIC, 1001, {}, collections.OrderedDict(), [])))
    assert published.read_state_dict(path) == {}
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
