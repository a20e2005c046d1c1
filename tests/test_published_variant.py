"""``--variant published`` around the modules: crops, prepare flags, the refusal of other folders, a run.

(The modules' equality with the published PyTorch code is in test_published.py.)
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cmir_tf.data import batching, pipeline
from cmir_tf.data.tfrecords import serialize_example, shard_name
from cmir_tf.errors import DataError
from cmir_tf.model.published import check_prepared
from cmir_tf.prepare import PrepareParams
from cmir_tf.prepare.genre_vectors import train_word2vec

N_FRAMES = 1500  # longer than the published window of 1300


@pytest.fixture(scope="module")
def frame_numbered(tmp_path_factory):
    """A split of 12 songs whose mel frame f holds the value f, so a crop names its own start."""
    root = tmp_path_factory.mktemp("frames")
    os.makedirs(root / "train")
    mel = np.repeat(np.arange(N_FRAMES, dtype=np.float16)[:, None], 48, axis=1)  # exact in float16 below 2048
    with tf.io.TFRecordWriter(str(root / "train" / shard_name("train", 0, 1, False))) as w:
        for sid in range(12):
            w.write(serialize_example(sid, mel, np.array([1, 2]), np.ones(4, np.float32)))
    (root / "manifest.json").write_text(json.dumps({"cf_dim": 4}))
    return root


def _starts(ds, n):
    return np.concatenate([b["mel"].numpy()[:, 0, 0] for b in ds.take(n)]).astype(int)


def test_window_keeps_training_crops_in_the_first_1300_frames_as_published(frame_numbered):
    ds = pipeline.make_dataset(frame_numbered, "train", 12, seed=3, crop_window=1300)
    starts = _starts(ds, 60)
    assert starts.min() >= 0 and 1000 < starts.max() <= 1043 and starts.min() < 50
    # the published loader's randint(0, 1300 − 256): [0, 1044), from the uniform draw u ∈ [0, 1)
    n = tf.constant([N_FRAMES, N_FRAMES, N_FRAMES, 1000, 256], tf.int64)
    u = tf.constant([0.0, 0.5, np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0), 0.7], tf.float64)
    assert batching._crop_starts(n, u, True, 1300).numpy().tolist() == [0, 522, 1043, 1000 - 257, 0]
    unwindowed = _starts(pipeline.make_dataset(frame_numbered, "train", 12, seed=3), 60)
    assert unwindowed.max() > 1043  # without the window the whole song is cropped


def test_window_centres_validation_and_random_val_crops_change_every_pass(frame_numbered):
    centre = _starts(pipeline.make_dataset(frame_numbered, "train", 4, training=False, crop_window=1300), 3)
    assert (centre == (1300 - 256) // 2).all()
    stream = pipeline.make_dataset(frame_numbered, "train", 4, training=False, random_crops=True, seed=5,
                                   drop_remainder=True, crop_window=1300)
    first, second = _starts(stream, 6).reshape(2, 12)  # two passes over the 12 songs of one endless stream
    assert (first != second).any() and first.max() < 1044 and len(set(first)) > 6


def test_prepare_params_record_cbow_only_when_chosen():
    assert "w2v_model" not in PrepareParams().as_dict()  # default manifests and fingerprints unchanged
    assert PrepareParams(w2v_model="cbow").as_dict()["w2v_model"] == "cbow"


def test_cbow_vectors_are_another_model_than_skipgram():
    rng = np.random.default_rng(0)
    vocab = [{"index": i, "code": f"GN{i:02d}00"} for i in range(12)]
    baskets = [[v["code"] for v in rng.choice(vocab, 3, replace=False)] for _ in range(200)]
    sg = train_word2vec(baskets, vocab, dim=16, seed=1)
    cbow = train_word2vec(baskets, vocab, dim=16, seed=1, model="cbow")
    assert cbow.shape == sg.shape == (12, 16) and np.abs(cbow - sg).max() > 1e-2
    np.testing.assert_array_equal(cbow, train_word2vec(baskets, vocab, dim=16, seed=1, model="cbow"))


def test_train_refuses_a_folder_prepared_otherwise_naming_the_flags():
    ok = {"params": {"w2v_model": "cbow", "w2v_dim": 128, "cf_dim": 301}, "w2v_dim": 128, "cf_dim": 301}
    check_prepared("d", ok)
    with pytest.raises(DataError) as err:
        check_prepared("d", {"params": {"w2v_dim": 200, "cf_dim": 301}, "w2v_dim": 200, "cf_dim": 301})
    message = str(err.value)
    assert "--w2v-model cbow --w2v-dim 128 --cf-dim 301" in message and "prepare --variant published" in message
    assert "differs in --w2v-model cbow, --w2v-dim 128" in message and "--cf-dim 301," not in message


def test_prepare_variant_published_sets_the_flags_and_refuses_others(synth_melon, tmp_path, capsys):
    from cmir_tf.prepare import main

    out = tmp_path / "p"
    assert main(["--melon", str(synth_melon), "--out", str(out), "--variant", "published", "--metadata-only",
                 "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["params"][k] for k in ("w2v_model", "w2v_dim", "cf_dim", "cf_iterations")} == {
        "w2v_model": "cbow", "w2v_dim": 128, "cf_dim": 301, "cf_iterations": 50}
    check_prepared(out, manifest)
    assert main(["--melon", str(synth_melon), "--out", str(tmp_path / "q"), "--variant", "published",
                 "--cf-dim", "64", "--metadata-only"]) == 2
    assert "--cf-dim 64: --variant published needs 301" in capsys.readouterr().err


def test_train_cli_refuses_variant_published_on_a_default_folder(prepared_data, tmp_path, capsys):
    from cmir_tf.train import main

    code = main(["--data", str(prepared_data), "--variant", "published", "--out", str(tmp_path / "r"), "--no-export"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a folder prepared with --w2v-model cbow --w2v-dim 128 --cf-dim 301" in err
    assert not (tmp_path / "r").exists()
    assert main(["--data", str(prepared_data), "--variant", "published", "--weight-decay", "1e-4"]) == 2
    assert "coupled L2" in capsys.readouterr().err


@pytest.mark.slow
def test_published_run_records_the_variant_in_model_json_and_the_export(synth_melon, tmp_path):
    from cmir_tf.export import load_run_model
    from cmir_tf.model.published import CoupledL2Adam, PublishedCFEncoder, PublishedGenreEncoder
    from cmir_tf.prepare import prepare
    from cmir_tf.train import main

    data = tmp_path / "data"
    prepare(synth_melon, data, seed=0, cf_dim=301, w2v_dim=128, w2v_model="cbow", shard_size=128, progress=False,
            verbose=False)
    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["--data", str(data), "--variant", "published", "--published-view", "--random-val-crops",
                 "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "1", "--batch-size", "8",
                 "--out", str(run), "--export-dir", str(export)]) == 0
    model_json = json.loads((run / "model.json").read_text())
    assert model_json["variant"] == "published" and model_json["published_view"] is True
    model, _, _, _ = load_run_model(run)
    assert isinstance(model.genre_encoder, PublishedGenreEncoder) and isinstance(model.cf_encoder, PublishedCFEncoder)
    assert model.genre_encoder.word2vec.trainable and model.genre_encoder.word2vec.shape[1] == 128
    metadata = [json.loads(p.read_text()) for p in export.rglob("*.json") if not p.name.endswith("-genres.json")]
    assert any(m.get("cmir_tf", {}).get("variant") == "published" for m in metadata)
    from cmir_tf.model.contrastive import build_model

    assert isinstance(build_model("contr_g", np.ones((3, 128), np.float32), variant="published").optimizer,
                      CoupledL2Adam)
