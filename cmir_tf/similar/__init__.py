"""The similar command (floor 9): nearest tracks in an embedding folder (annoy).

- ``index``: ``SimilarityIndex`` (saved with a checksummed ids file), ``find_similar``;
- ``__main__``: ``python -m cmir_tf.similar`` (``cmir-similar``).

May import: the floors below (ground … embed).

Public names (stable; import them from here: ``from cmir_tf.similar import …``):
``SimilarityIndex``, ``find_similar``, ``load_embedding``, ``load_embedding_folder``.
``main(argv=None)`` runs the command line (``cmir_tf.similar:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "index": ["SimilarityIndex", "find_similar", "load_embedding", "load_embedding_folder"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
