"""The module paths of cmir_tf 0.1's flat layout, still importable with a ``DeprecationWarning``.

Until the package was arranged in rooms by pipeline stage (``cmir_tf.audio``, ``data``, ``model``,
``synth``, ``prepare``, ``train``, ``export``, ``embed``, ``similar``, ``explore``, ``evaluate``), every
module sat directly in ``cmir_tf/``. Code written against those paths keeps working: ``import
cmir_tf.pipeline`` (or ``from cmir_tf.losses import nt_xent``) gives the module's new home
(``cmir_tf.data.pipeline``, ``cmir_tf.model.losses``) — the same module object, so patching it patches
the real one — and warns once, naming the new path. The old paths will be removed in a later release;
the stable names are each room's public names (README, "Public import paths").

The old paths of modules that became rooms of the same name (``cmir_tf.audio``, ``model``, ``synth``,
``prepare``, ``train``, ``export``, ``embed``, ``similar``, ``explore``, ``evaluate``) need no alias: the
room exports the module's public names, and ``cmir_tf.<command>:main`` is still the command line.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED", "install"]

# old module (under cmir_tf) → its new home (under cmir_tf)
MOVED = {
    "audio_framing": "audio.framing", "frontend": "audio.frontend",
    "melon": "data.melon", "tfrecords": "data.tfrecords", "prepared": "data.prepared",
    "prepared_check": "data.prepared_check", "pairs": "data.pairs", "pipeline": "data.pipeline",
    "pair_pipeline": "data.pair_pipeline", "library": "data.library", "library_tags": "data.library_tags",
    "library_playlists": "data.library_playlists",
    "compat": "model.compat", "distribute": "model.distribute", "precision": "model.precision",
    "presets": "model.presets", "encoders": "model.encoders", "losses": "model.losses",
    "published": "model.published",
    "synth_artists": "synth.artists",
    "song_split": "prepare.song_split", "cf": "prepare.cf", "genre_vectors": "prepare.genre_vectors",
    "shard_writer": "prepare.shard_writer",
    "config": "train.config", "embedded": "train.embedded", "callbacks": "train.callbacks",
    "progress": "train.progress", "rundir": "train.rundir",
    "exportdir": "export.exportdir", "zoo": "export.zoo", "formats": "export.formats",
    "frozen": "export.frozen", "released": "export.released", "torch_pickle": "export.torch_pickle",
    "cache": "evaluate.cache", "downstream": "evaluate.downstream", "gtzan": "evaluate.gtzan",
    "jamendo": "evaluate.jamendo", "playlists": "evaluate.playlists", "metrics": "evaluate.metrics",
    "report": "evaluate.report",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``cmir_tf.<old>`` and loads it as the new module (the same object), with a warning."""

    def __init__(self, package: str):
        self.package = package
        self.specs = {}  # the new modules' own specs, which the import system overwrites with the alias's

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.rpartition(".")
        if prefix != self.package or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"{self.package}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there (or the room's public names)",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self.specs[new] = module.__spec__
        return module

    def exec_module(self, module):
        """The new module is already executed: give it back its own spec (its name stays the new one)."""
        module.__spec__ = self.specs[module.__name__]


def install(package: str = "cmir_tf") -> None:
    """Make the old paths importable (once per process; ``cmir_tf/__init__.py`` calls it)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias(package))
