"""Shared test set-up: quiet TensorFlow, deterministic seeds, and small synthetic data in tmp folders."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest

# Sizes of the shared synthetic dataset: small enough to synthesise (≈1 s) and prepare (≈10 s) once per
# session, big enough for several train shards and every genre in every split.
SYNTH_SONGS = 300
SYNTH_PLAYLISTS = 150
SYNTH_SEED = 0
PREPARED_SHARD_SIZE = 64


@pytest.fixture(scope="session")
def synth_melon(tmp_path_factory):
    """A small synthetic Melon folder (``cmir_tf.synth``, 300 songs, 150 playlists, seed 0). Read-only."""
    from cmir_tf.synth import make_synthetic_melon

    root = tmp_path_factory.mktemp("synth_melon")
    make_synthetic_melon(root, songs=SYNTH_SONGS, playlists=SYNTH_PLAYLISTS, seed=SYNTH_SEED)
    return root


@pytest.fixture(scope="session")
def prepared_data(synth_melon, tmp_path_factory):
    """``synth_melon`` prepared by ``cmir_tf.prepare`` (2 worker processes, shards of 64 songs). Read-only."""
    from cmir_tf.prepare import prepare

    out = tmp_path_factory.mktemp("prepared_data")
    prepare(synth_melon, out, workers=2, seed=SYNTH_SEED, shard_size=PREPARED_SHARD_SIZE, progress=False,
            verbose=False)
    return out


from learning_common import learning  # noqa: E402,F401  (session fixture of the proof-of-learning tests)
