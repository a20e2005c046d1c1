"""The train command (floor 6): a run folder from a prepared folder.

- ``loop``: ``train()``: open the run, build the model, restore a backup, datasets, fit;
- ``config`` (``TrainConfig``, the config file and every flag), ``embedded`` (the embedded default:
  synthetic Melon prepared on first use), ``callbacks`` (non-finite stops, backup, best/last,
  history), ``progress`` (live progress, the start summary), ``rundir`` (``RunDir``: every file of a
  run folder);
- ``__main__``: ``python -m cmir_tf.train`` (``cmir-train``): train, then export the run.

May import: the floors below (ground, audio, data, model, synth, prepare).

Public names (stable; import them from here: ``from cmir_tf.train import …``):
``RunDir``, ``Schedule``, ``TrainConfig``, ``config_from_args``, ``model_config``, ``train``.
``main(argv=None)`` runs the command line (``cmir_tf.train:main``, the console script's target).
"""
import lazy_loader

from cmir_tf import cli

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "loop": ["train", "Schedule"],
        "config": ["TrainConfig", "config_from_args", "model_config"],
        "rundir": ["RunDir"],
    },
)
__all__ = [*__all__, "main"]
main = cli.door(__name__)  # the command line, imported when it runs
