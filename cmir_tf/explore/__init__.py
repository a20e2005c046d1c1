"""The explore command (floor 10): an embedding folder as one offline HTML map.

- ``page``: t-SNE / PCA map, neighbours from :mod:`cmir_tf.similar`, track names and fields from
  Melon, a prepared folder or tags, audio by relative link (``write_explorer``);
- ``__main__``: ``python -m cmir_tf.explore`` (``cmir-explore``).

May import: the floors below (ground … similar); not ``cmir_tf.evaluate`` (the same floor).

Public names (stable; import them from here: ``from cmir_tf.explore import …``):
``neighbours``, ``project``, ``track_info``, ``write_explorer``.
``main(argv=None)`` runs the command line (``cmir_tf.explore:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "page": ["write_explorer", "project", "track_info", "neighbours"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
