"""cmir_tf — Enriched Music Representations with Multiple Cross-modal Contrastive Learning in TF/Keras.

The package is arranged by the data's one-way flow, a room (subpackage) per stage on top of shared floors:

    ground floor   constants, errors, cli, fileio, lock, workpool  (this folder)
    audio          audio files → 16 kHz → mel spectrograms
    data           Melon / a music library, the prepared folder, TFRecords, tf.data pipelines
    model          encoders, NT-Xent losses, the contrastive model, presets, distribution, precision
    synth → prepare → train → export → embed → similar → explore / evaluate   (one room per command)

A module imports only its own room and the floors below it (docs/ARCHITECTURE.md; checked by
tests/test_layout.py). Each room's ``__init__`` lists its public names, importable from the room
(``from cmir_tf.model import build_model``); ``python -m cmir_tf.<command>`` runs a command.

Importing the package, or a room, is cheap: no TensorFlow is imported until a module that needs it is.
"""

__version__ = "0.1.0"

import os as _os

from cmir_tf import moved as _moved

# TensorFlow's C++ start-up chatter (CUDA factory registration on a CPU machine, logged as errors though
# harmless) drowns a CLI's own output; real failures still surface as Python exceptions. Set the variable
# yourself (e.g. TF_CPP_MIN_LOG_LEVEL=0) to see everything.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_moved.install(__name__)  # cmir_tf 0.1's flat module paths (cmir_tf.pipeline, …) still import, with a warning
