"""The data floor (floor 2): the datasets' layouts, the prepared folder, the records and the pipelines.

- sources: ``melon`` (the Melon Playlist Dataset layout), ``library`` / ``library_tags`` /
  ``library_playlists`` (a user's own music folder: files, tags, M3U playlists);
- the prepared folder: ``prepared`` (``PreparedData`` owns every file name; ``PreparedFacts`` the
  cached reads), ``prepared_check`` (what training checks before it starts);
- records: ``tfrecords`` (the record schema, written and parsed; shard names; CRC checks),
  ``pairs`` (relations, records index, an epoch's pairs);
- pipelines: ``batching`` (the records → batch step both pipelines share), ``pipeline``
  (``make_dataset``, ``make_patch_dataset``), ``pair_pipeline`` (``make_pair_dataset``).

May import: the ground floor and ``cmir_tf.audio``.

Public names (stable; import them from here: ``from cmir_tf.data import …``):
``LibrarySource``, ``MelError``, ``MelonLayout``, ``PairSampler``, ``PreparedData``,
``PreparedFacts``, ``Song``, ``check_shard``, ``feature_spec``, ``host_defaults``, ``load_mel``,
``make_dataset``, ``make_pair_dataset``, ``make_patch_dataset``, ``pair_count``,
``parse_example_numpy``, ``scan``, ``serialize_example``, ``shard_name``, ``write_mel``.
"""
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "melon": ["MelonLayout", "MelError", "Song", "load_mel", "write_mel"],
        "library": ["LibrarySource", "scan"],
        "prepared": ["PreparedData", "PreparedFacts"],
        "tfrecords": ["serialize_example", "feature_spec", "parse_example_numpy", "check_shard", "shard_name"],
        "pairs": ["PairSampler"],
        "pipeline": ["make_dataset", "make_patch_dataset", "host_defaults"],
        "pair_pipeline": ["make_pair_dataset", "pair_count"],
    },
)
