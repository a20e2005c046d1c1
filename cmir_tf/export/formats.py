"""The other formats an export ships beside the SavedModel: ONNX, a Keras file, the genre head graph.

* :func:`convert_onnx` — a frozen GraphDef → an ONNX model (tf2onnx, opset 13 by default, the batch
  dimension symbolic); optional: ``pip install -e ".[onnx]"`` (tested: tf2onnx 1.17 with onnx 1.23 / onnxruntime
  1.32 beside TensorFlow 2.21, and with onnx 1.17 / onnxruntime 1.20 beside TensorFlow 2.17);
  :func:`onnx_missing` says why it is unavailable, :func:`onnx_outputs` runs a model on onnxruntime.
* :func:`keras_model` — the audio encoder rebuilt layer for layer from Keras's built-in layers with its
  weights copied, so ``keras.saving.load_model`` opens the ``.keras`` file without cmir_tf installed.
* :func:`freeze_genre_head` — the zero-shot genre tagger (cosine of an embedding to each genre's φ_w)
  as a frozen graph that takes the encoder's embeddings: a model-zoo classification head.
* :func:`check_parity` — every converted file is compared with the TensorFlow model before it is
  published (max abs difference ≤ 1e-4 × max(1, max |value|)).
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np

from cmir_tf import constants as C
from cmir_tf.errors import ExportError

ONNX_OPSET = 13  # onnxruntime ≥ 1.6, OpenCV DNN, TensorRT 7+, ONNX.js … all run opset 13
ONNX_BATCH_DIM = "batch"
ONNX_EXTRA_HINT = 'pip install -e ".[onnx]"  (tf2onnx, onnx, onnxruntime)'
HEAD_INPUT = "embeddings"
HEAD_OUTPUT = "predictions"
PARITY_ATOL = 1e-4  # an ONNX / Keras file that differs more from the TensorFlow encoder is not published


# ------------------------------------------------------------------------------------ genre head
def freeze_genre_head(genre_table):
    """GraphDef of the genre head: Placeholder ``embeddings`` f32[?, D] → ``predictions`` f32[?, V].

    ``predictions = l2_normalize(embeddings) · T^T`` with T the unit rows of GENRE_TABLE (V, D): the
    SavedModel's ``tag_genres`` after the encoder. Built as a plain graph (no variables), attributes at
    their default value stripped like the encoder's graph.
    """
    import tensorflow as tf

    from cmir_tf.export.frozen import strip_default_attrs  # the encoder graph's clean-up

    table = unit_rows(genre_table).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, table.shape[1]], name=HEAD_INPUT)
        t = tf.constant(table, name="genre_embeddings")
        tf.identity(tf.matmul(tf.math.l2_normalize(x, axis=-1), t, transpose_b=True), name=HEAD_OUTPUT)
    graph_def = graph.as_graph_def()
    strip_default_attrs(graph_def)
    return graph_def


# ------------------------------------------------------------------------------------------ ONNX
def onnx_missing():
    """None when tf2onnx and onnx import, else the reason (one line)."""
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as e:
        return f"{e.name or e} is not installed"
    return None


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx's progress log and the TF1-API deprecation notices it triggers, silenced (errors stay)."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def convert_onnx(graph_def, inputs, outputs, *, opset=ONNX_OPSET, name="model", doc="", version=None):
    """ONNX ModelProto of a frozen GraphDef (tf2onnx), tensors named as the graph's nodes, batch dynamic.

    INPUTS / OUTPUTS: node names; the ONNX graph's inputs and outputs get these names (no ``:0``), and
    their first dimension is the symbolic ``batch``. Raises ExportError if the converter fails.
    """
    import onnx
    import tf2onnx

    rename = {f"{n}:0": n for n in (*inputs, *outputs)}
    try:
        with _quiet_tf2onnx():
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def, name=name, input_names=[f"{n}:0" for n in inputs],
                output_names=[f"{n}:0" for n in outputs], opset=opset, tensors_to_rename=rename)
    except Exception as e:  # noqa: BLE001 — tf2onnx raises many types
        raise ExportError(f"{name}.onnx: tf2onnx cannot convert the graph ({type(e).__name__}: {e})") from None
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = ONNX_BATCH_DIM
    model.doc_string = doc
    if version is not None:
        model.model_version = int(version)
    onnx.checker.check_model(model)
    return model


def onnx_outputs(model_bytes, feeds):
    """Run an ONNX model with onnxruntime on the CPU; {output name: array}. None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


# ----------------------------------------------------------------------------------------- Keras
def keras_model(audio_encoder):
    """The audio encoder as a Keras 3 functional model of built-in layers only, weights copied.

    Input ``melspectrogram`` (B, 256, 48); outputs ``{"embeddings": (B, 128), "features": (B, 1024)}``.
    Layer for layer the :class:`cmir_tf.model.encoders.AudioEncoder` (same names, same configuration, float32;
    its BatchNorms as ``keras.layers.BatchNormalization``), so ``keras.saving.load_model`` opens the file
    without cmir_tf, and training it behaves as the encoder (dropout, BatchNorm statistics).
    """
    import keras

    from cmir_tf.model.encoders import AudioEncoder

    if not isinstance(audio_encoder, AudioEncoder):
        raise ExportError(f"Keras file: needs a cmir_tf AudioEncoder, got {type(audio_encoder).__name__}")
    L = keras.layers
    pairs = []

    def clone(layer, cls=None):
        cfg = dict(layer.get_config(), dtype="float32")
        new = (cls or type(layer)).from_config(cfg)
        pairs.append((layer, new))
        return new

    bn = L.BatchNormalization
    inp = keras.Input((C.PATCH_FRAMES, C.N_BANDS), name="melspectrogram")
    h = L.Reshape((C.PATCH_FRAMES, C.N_BANDS, 1), name="channel")(inp)
    h = clone(audio_encoder.input_bn, bn)(h)
    for conv, conv_bn, pool in zip(audio_encoder.convs, audio_encoder.conv_bns, audio_encoder.pools):
        h = clone(conv)(h)
        h = clone(conv_bn, bn)(h)
        h = L.ReLU(name=f"{conv.name}_relu")(h)
        h = clone(pool)(h)
    features = L.Reshape((C.FEATURE_DIM,), name="features")(h)
    h = clone(audio_encoder.fc1)(features)
    h = clone(audio_encoder.fc1_bn, bn)(h)
    h = L.ReLU(name="fc1_relu")(h)
    h = clone(audio_encoder.drop)(h)
    h = clone(audio_encoder.fc2)(h)
    embeddings = clone(audio_encoder.ln)(h)
    model = keras.Model(inp, {"embeddings": embeddings, "features": features}, name="cmir_audio_encoder")
    for old, new in pairs:
        new.set_weights([np.asarray(w, np.float32) for w in old.get_weights()])
    return model


def unit_rows(x):
    """Rows scaled to unit length (float64)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def check_parity(kind, got, want, atol=PARITY_ATOL):
    """Max abs difference of GOT from WANT; ExportError above ATOL × max(1, max |WANT|).

    The tolerance grows with the values' scale: float32 rounding in a deep convolution stack is
    relative (unit-scale embeddings are held to ATOL itself, the larger `features` proportionally).
    """
    want = np.asarray(want, np.float64)
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
    limit = atol * max(1.0, float(np.max(np.abs(want))))
    if not diff <= limit:
        raise ExportError(f"{kind}: differs from the TensorFlow model by {diff:.3g} (> {limit:.3g}); not published")
    return diff
