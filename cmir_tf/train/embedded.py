"""The embedded default of ``python -m cmir_tf.train`` (no ``--data``): a fresh checkout trains end to end.

It writes a small synthetic Melon set to ``data/synth_melon`` (if absent), prepares it into
``tfrecords/synth`` (a rerun resumes an interrupted preparation), trains the default model briefly
(:data:`EMBEDDED_DEFAULTS`: minutes on 2 CPU cores, not the paper's schedule) into ``runs/<mode>`` and
exports it to ``export/<run name>``. Paths are relative to the working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MELON = Path("data/synth_melon")
DEFAULT_PREPARED = Path("tfrecords/synth")
DEFAULT_RUNS = Path("runs")
DEFAULT_EXPORTS = Path("export")

# Settings the embedded default changes unless the config file or a flag sets them.
EMBEDDED_DEFAULTS = {"epochs": 3, "batch_size": 64}


def default_run_dir(mode: str) -> Path:
    return DEFAULT_RUNS / mode


def default_export_dir(run_dir) -> Path:
    return DEFAULT_EXPORTS / Path(run_dir).name


def ensure_embedded_data(seed: int = 0, songs: int | None = None, playlists: int | None = None) -> Path:
    """Synthesise Melon (if absent) and prepare it (resuming); return the prepared folder."""
    from cmir_tf.data.melon import MelonLayout
    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.prepare import preparation as prepare
    from cmir_tf.synth import generator as synth

    melon = DEFAULT_MELON
    if not os.path.exists(MelonLayout(melon).song_meta):
        kwargs = {}
        if songs:
            kwargs["songs"] = songs
        if playlists:
            kwargs["playlists"] = playlists
        print(f"[cmir_tf] writing a synthetic Melon set to {melon} …", flush=True)
        synth.make_synthetic_melon(melon, seed=seed, **kwargs)
    if not PreparedData(DEFAULT_PREPARED).is_complete():
        print(f"[cmir_tf] preparing {melon} → {DEFAULT_PREPARED} …", flush=True)
        prepare.prepare(melon, DEFAULT_PREPARED, seed=seed, workers=min(2, os.cpu_count() or 1))
    return DEFAULT_PREPARED
