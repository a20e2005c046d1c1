"""The embed command (floor 8): audio files or Melon mels → embeddings with an export.

- ``embedder``: ``Embedder`` (an exported model → patch embeddings + the track mean);
- ``folder``: ``embed_to_folder`` (many inputs → an output folder it owns: ``<id>.npy``, ``<id>.mean.npy``);
- ``published``: the published ``encode.py`` front end (``--published-frontend``);
- ``__main__``: ``python -m cmir_tf.embed`` (``cmir-embed``).

May import: the floors below (ground … export).

Public names (stable; import them from here: ``from cmir_tf.embed import …``):
``Embedder``, ``PublishedEmbedder``, ``centre_segment``, ``collect_inputs``, ``embed_to_folder``,
``mel_patches``.
``main(argv=None)`` runs the command line (``cmir_tf.embed:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "embedder": ["Embedder", "mel_patches"],
        "folder": ["embed_to_folder", "collect_inputs"],
        "published": ["PublishedEmbedder", "centre_segment"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
