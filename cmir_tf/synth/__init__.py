"""The synth command (floor 4): a synthetic Melon Playlist Dataset in Melon's exact layout.

- ``generator``: songs, genres and playlists with planted structure (genres and playlist tastes
  that really shape the mels), and every fault of the real dataset on request (``--hostile``);
- ``artists``: the synthetic artists, one audio signature each;
- ``__main__``: ``python -m cmir_tf.synth`` (``cmir-synth``).

May import: the floors below (ground, audio, data, model).

Public names (stable; import them from here: ``from cmir_tf.synth import …``):
``make_synthetic_melon``, ``plant_hostile``, ``synth_mel``.
``main(argv=None)`` runs the command line (``cmir_tf.synth:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "generator": ["make_synthetic_melon", "plant_hostile", "synth_mel"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
