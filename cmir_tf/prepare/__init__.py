"""The prepare command (floor 5): a Melon folder or a music library → a prepared folder.

- ``preparation``: ``prepare()``, named resumable steps over a ``Preparation``, the manifest;
- ``song_split`` (usable songs, skip reasons, the stratified 80/10/10 split), ``cf`` (playlist CF
  vectors with implicit), ``genre_vectors`` (genre vocabulary, gensim word2vec), ``shard_writer``
  (worker processes writing the TFRecord shards);
- ``__main__``: ``python -m cmir_tf.prepare`` (``cmir-prepare``).

May import: the floors below (ground, audio, data, model, synth).

Public names (stable; import them from here: ``from cmir_tf.prepare import …``):
``PrepareParams``, ``prepare``, ``summary``.
``main(argv=None)`` runs the command line (``cmir_tf.prepare:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "preparation": ["prepare", "PrepareParams", "summary"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
