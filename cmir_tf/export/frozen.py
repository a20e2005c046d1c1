"""Frozen GraphDefs of an export: the audio encoder (Essentia, ONNX) and its clean-up.

``DIR/<NAME>.pb`` is the audio encoder in inference mode with its variables folded into constants:
input Placeholder ``melspectrogram`` f32[B,256,48], outputs ``embeddings`` [B,128] and ``features``
[B,1024] (Identity nodes); only the nodes those outputs need; core ops only; attributes at their op's
default value and internal ``_…`` attributes stripped, so older runtimes (Essentia's TensorFlow) load
it without "NodeDef mentions attribute … not in the op definition" warnings.

Its metadata (``DIR/<NAME>.json``, the Essentia model zoo's schema) is written by ``cmir_tf.export.zoo``.

Freezing and attribute defaults use TensorFlow APIs outside ``tf.*``, fenced in ``cmir_tf.model.compat``.
"""
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.errors import ExportError
from cmir_tf.model import compat

INPUT_NODE = "melspectrogram"
EMBEDDINGS_NODE = "embeddings"
FEATURES_NODE = "features"


# ---------------------------------------------------------------------------------- frozen graph
def strip_default_attrs(graph_def):
    """Remove attributes at their op's default value and internal `_…` ones, in place.

    A runtime fills in defaults for the attributes it knows; attributes added by a newer TensorFlow
    (MatMul `grad_a`/`grad_b`, …) are default-valued in an inference graph, so removing them makes
    the graph loadable without "NodeDef mentions attribute … not in the op definition" warnings.
    Returns the sorted list of (op, attr) pairs removed.
    """
    removed = set()
    for node in graph_def.node:
        op_def = compat.op_def(node.op)
        if op_def is None:
            raise ExportError(f"frozen graph: op {node.op!r} of node {node.name!r} is not a core TensorFlow op")
        defaults = {a.name: a.default_value for a in op_def.attr if a.HasField("default_value")}
        for key in list(node.attr):
            if key.startswith("_") or (key in defaults and node.attr[key] == defaults[key]):
                del node.attr[key]
                removed.add((node.op, key))
    return sorted(removed)


def freeze_audio_encoder(audio_encoder, strip=True):
    """GraphDef of the audio encoder in inference mode with variables folded into constants.

    Input Placeholder `melspectrogram` f32[?,256,48]; outputs `embeddings` and `features` (Identity
    nodes); only the nodes those outputs need; default-valued attributes stripped (unless STRIP is false).
    """
    @tf.function(input_signature=[tf.TensorSpec([None, C.PATCH_FRAMES, C.N_BANDS], tf.float32, name=INPUT_NODE)])
    def encode(melspectrogram):
        emb, feat = audio_encoder(melspectrogram, training=False)
        return tf.identity(emb, name=EMBEDDINGS_NODE), tf.identity(feat, name=FEATURES_NODE)

    frozen = compat.freeze_variables(encode.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    graph_def = _prune(graph_def, [EMBEDDINGS_NODE, FEATURES_NODE])
    del graph_def.library.function[:]  # inlined by the freezing; nothing may refer to a function
    if strip:
        strip_default_attrs(graph_def)
    names = {n.name: n for n in graph_def.node}
    for node in (INPUT_NODE, EMBEDDINGS_NODE, FEATURES_NODE):
        if node not in names:
            raise ExportError(f"frozen graph: node {node!r} missing after freezing")
    if names[INPUT_NODE].op != "Placeholder":
        raise ExportError(f"frozen graph: {INPUT_NODE!r} is a {names[INPUT_NODE].op}, not a Placeholder")
    return graph_def


def _prune(graph_def, outputs):
    """Only the nodes OUTPUTS depend on (data and control inputs), in their original order."""
    by_name = {n.name: n for n in graph_def.node}
    keep, todo = set(), list(outputs)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for inp in by_name[name].input:
            todo.append(inp.lstrip("^").split(":")[0])
    pruned = tf.compat.v1.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.node.extend(n for n in graph_def.node if n.name in keep)
    return pruned


def graph_op_types(graph_def):
    """Every op type in a GraphDef, including its function library."""
    ops = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    return ops


def check_core_ops(ops, where):
    """Raise ExportError if any op is a tensorflow-io (`IO>…`) op."""
    bad = sorted(op for op in ops if op.startswith("IO>"))
    if bad:
        raise ExportError(f"{where}: tensorflow-io ops {bad} would make it unloadable by TF Serving/Essentia")

