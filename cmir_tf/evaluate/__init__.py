"""The evaluate command (floor 10): the paper's downstream protocols and its report.

- ``evaluation``: ``evaluate_models`` (every model × dataset → the report);
- ``gtzan`` (Table 1), ``jamendo`` (Table 2), ``playlists`` (Table 3), ``metrics`` (nDCG@k, AP@k),
  ``report`` (Tables 1–3 beside the paper's, plots), ``cache`` (embeddings once per model and
  file), ``downstream`` (the protocols' settings and input checks);
- ``__main__``: ``python -m cmir_tf.evaluate {gtzan,jamendo,playlists,all}`` (``cmir-evaluate``).

May import: the floors below (ground … similar); not ``cmir_tf.explore`` (the same floor).

Public names (stable; import them from here: ``from cmir_tf.evaluate import …``):
``EmbeddingCache``, ``Model``, ``average_precision_at_k``, ``evaluate_gtzan``, ``evaluate_jamendo``,
``evaluate_models``, ``evaluate_playlists``, ``load_model``, ``markdown``, ``ndcg_at_k``,
``read_gtzan``, ``read_jamendo``, ``write_report``.
``main(argv=None)`` runs the command line (``cmir_tf.evaluate:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "evaluation": ["evaluate_models"],
        "gtzan": ["evaluate_gtzan", "read_gtzan"],
        "jamendo": ["evaluate_jamendo", "read_jamendo"],
        "playlists": ["evaluate_playlists"],
        "metrics": ["ndcg_at_k", "average_precision_at_k"],
        "report": ["write_report", "markdown"],
        "cache": ["EmbeddingCache", "Model", "load_model"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
