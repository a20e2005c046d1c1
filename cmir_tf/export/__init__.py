"""The export command (floor 7): a run folder (or a released checkpoint) → an export folder.

- ``exporter``: the SavedModel (``serving_default``, ``embed_waveform``, ``tag_genres``), ``export_run``;
- ``frozen`` (the frozen GraphDef Essentia loads), ``formats`` (ONNX, the Keras file, the genre head),
  ``zoo`` (Essentia model-zoo metadata), ``exportdir`` (``ExportDir``: the folder's layout and
  versions), ``reports`` (evaluation reports read back as the metadata's metrics);
- ``released`` + ``torch_pickle``: the authors' released ``audio_encoder.pt``, read without PyTorch;
- ``__main__``: ``python -m cmir_tf.export`` (``cmir-export``).

May import: the floors below (ground … train).

Public names (stable; import them from here: ``from cmir_tf.export import …``):
``ExportDir``, ``ExportResult``, ``export_model``, ``export_published``, ``export_run``,
``find_saved_model``, ``load_audio_encoder``, ``load_run_model``.
``main(argv=None)`` runs the command line (``cmir_tf.export:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "exporter": ["export_run", "export_model", "ExportResult", "load_run_model"],
        "exportdir": ["ExportDir", "find_saved_model"],
        "released": ["export_published", "load_audio_encoder"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
