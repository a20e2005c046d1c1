"""cmir_tf — Enriched Music Representations with Multiple Cross-modal Contrastive Learning in TF/Keras.

Data flows one way through the package's modules (each named after the paper's concept):

    melon (layout) → synth (synthetic Melon) → prepare (split, CF, word2vec, TFRecords)
    → pipeline (tf.data) → encoders / losses / model → train → export → embed / similar / evaluate

Importing the package is cheap: no TensorFlow is imported until a module that needs it is.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA factory registration on a CPU machine, logged as errors though
# harmless) drowns a CLI's own output; real failures still surface as Python exceptions. Set the variable
# yourself (e.g. TF_CPP_MIN_LOG_LEVEL=0) to see everything.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
