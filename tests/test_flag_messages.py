"""Messages a user's mistake draws name the flag that fixes it (README: "one line naming the file or flag")."""
import numpy as np
import pytest

from cmir_tf.synth import make_synthetic_melon

SMALL = ["--cf-dim", "4", "--w2v-dim", "4", "--cf-iterations", "2", "--w2v-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def metadata_folder(tmp_path_factory):
    """A tiny Melon folder without mels, prepared with --metadata-only (seed 1)."""
    from cmir_tf.prepare import main

    root = tmp_path_factory.mktemp("meta")
    make_synthetic_melon(root / "melon", songs=200, playlists=80, seed=1, mels=False)
    assert main(["--melon", str(root / "melon"), "--out", str(root / "prep"), "--metadata-only", "--seed", "1",
                 *SMALL]) == 0
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_prepare_again_with_another_seed_names_the_parameter_and_overwrite(metadata_folder, capsys):
    from cmir_tf.prepare import main

    code = main(["--melon", str(metadata_folder / "melon"), "--out", str(metadata_folder / "prep"), "--metadata-only",
                 "--seed", "2", *SMALL])
    line = _error(capsys)
    assert code == 2 and "--seed 1, now 2" in line and "--overwrite" in line


def test_training_on_a_metadata_only_folder_says_what_it_is(metadata_folder, capsys):
    from cmir_tf.train import main

    code = main(["--data", str(metadata_folder / "prep"), "--out", str(metadata_folder / "run"), "--no-export"])
    line = _error(capsys)
    assert code == 2 and "prepared with --metadata-only" in line and "without --metadata-only" in line
    assert "missing train/" not in line


def test_prepare_gzip_warns_that_audio_pair_strategies_cannot_read_it(tmp_path, capsys):
    from cmir_tf.prepare import main

    code = main(["--melon", str(tmp_path / "absent"), "--out", str(tmp_path / "p"), "--gzip", *SMALL])
    err = capsys.readouterr().err
    assert code == 2  # the missing Melon folder: the warning comes before any work
    assert "warning: --gzip: the audio-pair strategies" in err and "cannot train on GZIP shards" in err
    main(["--melon", str(tmp_path / "absent"), "--out", str(tmp_path / "p"), *SMALL])
    assert "--gzip" not in capsys.readouterr().err


def test_similar_file_without_model_names_model(tmp_path, capsys):
    from cmir_tf.similar import main

    emb = tmp_path / "emb"
    emb.mkdir()
    for i in range(3):
        np.save(emb / f"t{i}.npy", np.random.default_rng(i).normal(size=(4, 8)).astype(np.float32))
    np.save(tmp_path / "song.npy", np.zeros((300, 48), np.float32))  # a mel, not an 8-d embedding
    code = main([str(emb), "--file", str(tmp_path / "song.npy")])
    line = _error(capsys)
    assert code == 2 and f"--file {tmp_path / 'song.npy'}" in line and "needs --model" in line


def test_export_version_names_the_flag(tmp_path):
    from cmir_tf.errors import ConfigError
    from cmir_tf.export.exportdir import ExportDir

    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match=r"^--version: must be a positive integer"):
            ExportDir(tmp_path / "e").resolve_version(bad)
