"""The Essentia side of an export: the audio encoder as a frozen GraphDef, and Essentia's model JSON.

``DIR/<NAME>.pb`` is the audio encoder in inference mode with its variables folded into constants:
input Placeholder ``melspectrogram`` f32[B,256,48], outputs ``embeddings`` [B,128] and ``features``
[B,1024] (Identity nodes); only the nodes those outputs need; core ops only; attributes at their op's
default value and internal ``_…`` attributes stripped, so older runtimes (Essentia's TensorFlow) load
it without "NodeDef mentions attribute … not in the op definition" warnings.

``DIR/<NAME>.json`` is Essentia's model metadata (the layout of Essentia's published models: name,
type, link, version, schema of inputs / outputs with their node names, inference settings for
``TensorflowPredict2D`` — 16 kHz, patch size and hop 256 — and the mel front end's parameters), so
Essentia's model-loading helpers can run the graph.

Freezing and attribute defaults use TensorFlow APIs outside ``tf.*``, fenced in ``cmir_tf.compat``.
"""
import datetime

import tensorflow as tf

from cmir_tf import __version__ as PACKAGE_VERSION
from cmir_tf import compat
from cmir_tf import constants as C
from cmir_tf.errors import ExportError

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


# ------------------------------------------------------------------------------ Essentia metadata
# Melon's mel front end, as the metadata describes it to Essentia users
MELSPECTROGRAM = {
    "sample_rate": C.SAMPLE_RATE, "frame_size": C.FRAME_SIZE, "hop_size": C.HOP_SIZE,
    "window": "hann (symmetric, not normalized)", "spectrum": "magnitude", "number_bands": C.N_BANDS,
    "low_frequency_bound": C.MEL_FMIN, "high_frequency_bound": C.MEL_FMAX, "warping_formula": "slaneyMel",
    "normalize": "unit_tri", "type": "power", "compression": "lin2db scale 2 (20*log10, floor -200 dB)",
    "centred_frames": True,
}
MELON_DATASET = {
    "name": "Melon Playlist Dataset",
    "citation": ("Ferraro, A., Kim, Y., Lee, S., Kim, B., Jo, N., Lim, S., Lim, S., Jang, J., Kim, S., "
                 "Serra, X., Bogdanov, D. (2021). Melon Playlist Dataset: a public dataset for audio-based "
                 "playlist generation and music tagging. ICASSP 2021."),
    "size": "",
    "metrics": {},
}


def essentia_metadata(name, version, *, embed_dim, feature_dim, description=None, dataset=None,
                      extra=None, batch_size=64):
    """Essentia's model JSON for the frozen graph NAME.pb (see the module docstring)."""
    return {
        "name": name,
        "type": "audio embedding extractor",
        "link": f"{name}.pb",
        "version": str(version),
        "description": description or (
            "Audio encoder of a cross-modal contrastive model (Ferraro et al., 2021: audio aligned with "
            "genre word embeddings and playlist co-occurrence) trained with cmir_tf; maps 256-frame "
            "48-band mel-spectrogram patches (Melon's front end) to 128-d embeddings."),
        "author": "cmir_tf",
        "email": "",
        "release_date": datetime.date.today().isoformat(),
        "framework": "tensorflow",
        "framework_version": tf.__version__,
        "classes": [],
        "model_types": ["frozen_model"],
        "dataset": dataset or dict(MELON_DATASET),
        "schema": {
            "inputs": [{"name": INPUT_NODE, "type": "float", "shape": [C.PATCH_FRAMES, C.N_BANDS]}],
            "outputs": [
                {"name": EMBEDDINGS_NODE, "type": "float", "shape": [1, embed_dim], "op": "LayerNormalization",
                 "description": "embeddings in the shared audio/genre/playlist space (compare with cosine)",
                 "output_purpose": "embeddings"},
                {"name": FEATURES_NODE, "type": "float", "shape": [1, feature_dim], "op": "Flatten",
                 "description": "flattened output of the convolutional blocks (input of the feed-forward block)",
                 "output_purpose": ""},
            ],
        },
        "citation": ("Ferraro, A., Favory, X., Drossos, K., Kim, Y., Bogdanov, D. (2021). Enriched Music "
                     "Representations with Multiple Cross-modal Contrastive Learning. IEEE Signal Processing "
                     "Letters, 28, 733-737."),
        "inference": {
            "sample_rate": C.SAMPLE_RATE,
            "algorithm": "TensorflowPredict2D",
            "patch_size": C.PATCH_FRAMES,
            "patch_hop_size": C.PATCH_FRAMES,
            "embedding_model": {
                "algorithm": "TensorflowPredict2D",
                "model_name": name,
                "link": f"{name}.pb",
                "input": INPUT_NODE,
                "output": EMBEDDINGS_NODE,
                "patch_size": C.PATCH_FRAMES,
                "patch_hop_size": C.PATCH_FRAMES,
                "batch_size": batch_size,
                "input_features": "melspectrogram (frames, 48) in dB, computed as Melon's: see melspectrogram",
                "melspectrogram": dict(MELSPECTROGRAM),
            },
        },
        "cmir_tf": {"package_version": PACKAGE_VERSION, "saved_model_version": int(version),
                    "batch_dimension": "dynamic", **(extra or {})},
    }
