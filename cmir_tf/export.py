"""Export a trained audio encoder for its consumers: TF Serving, Essentia, ONNX runtimes, Keras.

    python -m cmir_tf.export --run RUN_DIR --out DIR [--version N] [--name NAME] [--link-base URL]
        [--author NAME] [--email ADDRESS] [--report FILE ...] [--report-model NAME] [--onnx | --no-onnx]

writes, atomically (everything is staged in a temporary folder inside DIR, then renamed into place):

    DIR/saved_model/<N>/     TF Serving layout: saved_model.pb, variables/, assets/genres.txt
        serving_default(melspectrogram f32[B,256,48]) -> embeddings f32[B,128], features f32[B,1024]
        embed_waveform(waveform f32[n], 16 kHz mono)  -> embeddings f32[P,128] (non-overlapping
                                                         256-frame patches), mean f32[128]
        tag_genres(melspectrogram f32[B,256,48])      -> scores f32[B,V] (cosine of φ_a against every
                                                         vocabulary genre's φ_w), genres string[V]
    DIR/<NAME>.pb            frozen audio encoder (inference mode): input `melspectrogram`
                             f32[B,256,48], outputs `embeddings` [B,128] and `features` [B,1024];
                             core ops only, attributes at their default value stripped so older
                             runtimes (Essentia's TensorFlow) load it without warnings
    DIR/<NAME>.json          its metadata in the Essentia model zoo's schema (TensorflowPredict2D,
                             16 kHz, patch size / hop 256; dataset, metrics, citation)
    DIR/<NAME>.onnx          the same encoder in ONNX (opset 13, dynamic batch) when the [onnx] extra
                             is installed
    DIR/<NAME>.keras         the same encoder as a Keras 3 model of built-in layers
    DIR/<NAME>-genres.pb     the zero-shot genre tagger as a zoo classification head on the
    DIR/<NAME>-genres.json   encoder's embeddings (+ .onnx), for models with a genre encoder

The zoo files are written by cmir_tf.zoo (export/README.md documents every metadata key).
`N` defaults to one more than the highest version already in DIR/saved_model; an existing version is
never overwritten (ExportError). The top-level files describe the newest export: a later version
replaces them (their `version` field says which SavedModel version they match) and removes those it
does not have.

`tag_genres` (and the genres asset) exists only for models with a genre encoder (contr_g, contr_cf_g):
each vocabulary genre's φ_w is computed once at export time by the GenreEncoder on that single genre
(inference mode) and stored in the SavedModel as a (V, 128) constant of unit vectors.
"""
import argparse
import dataclasses
import inspect
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf import zoo
from cmir_tf.errors import ConfigError, ExportError

DEFAULT_NAME = "cmir-audio-encoder"
INPUT_NODE = "melspectrogram"
EMBEDDINGS_NODE = "embeddings"
FEATURES_NODE = "features"
GENRES_ASSET = "genres.txt"
SIGNATURES = ("serving_default", "embed_waveform", "tag_genres")
_VERSION_RE = re.compile(r"^[0-9]+$")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where an export went; usable as a path (os.fspath gives the export folder DIR)."""

    out_dir: str
    version: int
    saved_model_dir: str
    graph_path: str
    metadata_path: str
    onnx_path: str | None = None  # None: not written (ONNX extra missing, or --no-onnx)
    keras_path: str | None = None
    genres_graph_path: str | None = None  # only for models with a genre encoder
    genres_metadata_path: str | None = None
    notes: tuple = ()  # one-line remarks for the user (e.g. ONNX skipped)

    def __fspath__(self):
        return self.out_dir


# ---------------------------------------------------------------------------------------- versions
def existing_versions(out_dir):
    """Integer version folders under OUT_DIR/saved_model (TF Serving ignores any other name)."""
    root = os.path.join(out_dir, "saved_model")
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root) if _VERSION_RE.match(d) and os.path.isdir(os.path.join(root, d)))


def resolve_version(out_dir, version=None):
    """The version to write: VERSION if free, else 1 + the highest existing one (1 for a new DIR)."""
    if version is None:
        found = existing_versions(out_dir)
        return (found[-1] + 1) if found else 1
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ConfigError(f"--version: must be a positive integer (TF Serving's version folder), got {version!r}")
    target = os.path.join(out_dir, "saved_model", str(int(version)))
    if os.path.exists(target):
        raise ExportError(f"{target}: version {int(version)} already exists; refusing to overwrite it "
                          f"(choose another --version or omit it to use {resolve_version(out_dir)})")
    return int(version)


# ----------------------------------------------------------------------------------- genre space
def genre_embeddings(genre_encoder, n_genres):
    """φ_w of every vocabulary genre alone: the GenreEncoder on (genre i, mask with one genre), (V, D)."""
    idx = np.zeros((n_genres, C.MAX_GENRES), np.int32)
    idx[:, 0] = np.arange(n_genres, dtype=np.int32)
    mask = np.zeros((n_genres, C.MAX_GENRES), bool)
    mask[:, 0] = True
    out = genre_encoder(tf.constant(idx), tf.constant(mask), training=False)
    return np.asarray(out, np.float32)


def _unit_rows(x, eps=1e-12):
    x = np.asarray(x, np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


def genre_names(vocab):
    """Vocabulary entries ordered by index → display names (the code where a name is missing)."""
    entries = sorted(vocab, key=lambda e: int(e["index"]))
    if [int(e["index"]) for e in entries] != list(range(len(entries))):
        raise ExportError("vocab: indices must be 0..V-1 without gaps")
    names = []
    for e in entries:
        name = str(e.get("name") or e.get("code") or "").replace("\n", " ").replace("\r", " ").strip()
        names.append(name or f"genre_{e['index']}")
    return names


# ------------------------------------------------------------------------------------ SavedModel
class _Serving(tf.Module):
    """What the SavedModel holds: the audio encoder, the genre table, the names asset, 3 signatures."""

    def __init__(self, audio_encoder, genre_table=None, names=None, names_path=None):
        super().__init__(name="cmir_tf_export")
        self.audio_encoder = audio_encoder
        self.has_genres = genre_table is not None
        if self.has_genres:
            self.genre_table = tf.Variable(_unit_rows(genre_table), trainable=False, name="genre_embeddings")
            self.genre_names_asset = tf.saved_model.Asset(names_path)
            self._names = list(names)

    def _encode(self, mel):
        emb, feat = self.audio_encoder(mel, training=False)
        return emb, feat

    def signatures(self):
        from cmir_tf import frontend  # floor 1; imported here so export's frozen-graph path needs only TF

        spec = tf.TensorSpec([None, C.PATCH_FRAMES, C.N_BANDS], tf.float32, name=INPUT_NODE)

        @tf.function(input_signature=[spec])
        def serving_default(melspectrogram):
            emb, feat = self._encode(melspectrogram)
            return {EMBEDDINGS_NODE: emb, FEATURES_NODE: feat}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
        def embed_waveform(waveform):
            mel = frontend.melspectrogram(waveform)
            patches = frontend.patches(mel)
            emb, _ = self._encode(patches)
            return {EMBEDDINGS_NODE: emb, "mean": tf.reduce_mean(emb, axis=0)}

        sigs = {"serving_default": serving_default, "embed_waveform": embed_waveform}
        if self.has_genres:
            names = tf.constant(self._names, tf.string)

            @tf.function(input_signature=[spec])
            def tag_genres(melspectrogram):
                emb, _ = self._encode(melspectrogram)
                scores = tf.matmul(tf.math.l2_normalize(emb, axis=-1), self.genre_table, transpose_b=True)
                return {"scores": scores, "genres": tf.identity(names)}

            sigs["tag_genres"] = tag_genres
        # keep the functions reachable as attributes too (tf.saved_model.load(...).serving_default)
        for key, fn in sigs.items():
            setattr(self, key, fn)
        return sigs


def _write_saved_model(audio_encoder, genre_table, names, path, staging):
    names_path = None
    if genre_table is not None:
        names_path = os.path.join(staging, GENRES_ASSET)
        with open(names_path, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
    module = _Serving(audio_encoder, genre_table, names, names_path)
    sigs = module.signatures()
    tf.saved_model.save(module, path, signatures=sigs)
    return sorted(sigs)


# ---------------------------------------------------------------------------------- frozen graph
def strip_default_attrs(graph_def):
    """Remove attributes at their op's default value and internal `_…` ones, in place.

    A runtime fills in defaults for the attributes it knows; attributes added by a newer TensorFlow
    (MatMul `grad_a`/`grad_b`, …) are default-valued in an inference graph, so removing them makes
    the graph loadable without "NodeDef mentions attribute … not in the op definition" warnings.
    Returns the sorted list of (op, attr) pairs removed.
    """
    from tensorflow.python.framework import op_def_registry

    removed = set()
    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
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
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([None, C.PATCH_FRAMES, C.N_BANDS], tf.float32, name=INPUT_NODE)])
    def encode(melspectrogram):
        emb, feat = audio_encoder(melspectrogram, training=False)
        return tf.identity(emb, name=EMBEDDINGS_NODE), tf.identity(feat, name=FEATURES_NODE)

    frozen = convert_variables_to_constants_v2(encode.get_concrete_function())
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


# ---------------------------------------------------------------------------------------- export
def _atomic_write_bytes(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_model(audio_encoder, genre_encoder, vocab, out_dir, version=None, *, name=DEFAULT_NAME,
                 description=None, dataset=None, extra=None, options=None):
    """Write DIR/saved_model/<N>/, DIR/<name>.pb and DIR/<name>.json; returns an ExportResult.

    audio_encoder: callable `(mel (B,256,48), training=False) -> (embeddings (B,D), features (B,F))`.
    genre_encoder: GenreEncoder (for tag_genres) or None. vocab: [{index, code, name}] (used only with
    a genre encoder). Nothing under DIR changes unless every part was written.
    """
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name or ""):
        raise ConfigError(f"--name: {name!r} must be a plain file name (letters, digits, . _ -)")
    os.makedirs(os.path.join(out_dir, "saved_model"), exist_ok=True)
    version = resolve_version(out_dir, version)
    target = os.path.join(out_dir, "saved_model", str(version))

    genre_table, names = None, None
    if genre_encoder is not None:
        names = genre_names(vocab)
        genre_table = genre_embeddings(genre_encoder, len(names))

    graph_def = freeze_audio_encoder(audio_encoder)
    check_core_ops(graph_op_types(graph_def), f"{name}.pb")
    out_shapes = [audio_encoder(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]), training=False)[i].shape[-1] for i in (0, 1)]

    staging = tempfile.mkdtemp(dir=out_dir, prefix=".export-tmp-")
    try:
        staged_sm = os.path.join(staging, "saved_model")
        _write_saved_model(audio_encoder, genre_table, names, staged_sm, staging)
        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel()
        with open(os.path.join(staged_sm, "saved_model.pb"), "rb") as f:
            sm.ParseFromString(f.read())
        for mg in sm.meta_graphs:
            check_core_ops(graph_op_types(mg.graph_def), f"{target}/saved_model.pb")

        staged = zoo.stage_files(staging, name=name, version=version, audio_encoder=audio_encoder,
                                 graph_def=graph_def, genre_table=genre_table, genre_names=names,
                                 embed_dim=int(out_shapes[0]), feature_dim=int(out_shapes[1]),
                                 description=description, dataset=dataset, extra=extra, options=options)

        # Publish: the version folder first (a rename never replaces a non-empty folder: a concurrent
        # export of the same version fails here instead of mixing files), then the top-level files (JSONs last).
        try:
            os.rename(staged_sm, target)
        except OSError as e:
            raise ExportError(f"{target}: cannot publish version {version} ({e.strerror}); refusing to overwrite")
        published = zoo.publish_files(staged, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(os.fspath(out_dir), version, target, published["graph"], published["metadata"],
                        published.get("onnx"), published.get("keras"), published.get("genres_graph"),
                        published.get("genres_metadata"), tuple(staged.notes))


# ----------------------------------------------------------------------------------- from a run
def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path}: missing ({what})") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable {what} ({e})") from None


def load_run_model(run_dir):
    """Rebuild the run's model from config.json + word2vec.npy and load best (else last) weights.

    Returns (model, config, vocab, weights_path).
    """
    from cmir_tf import model as model_lib

    config = _read_json(os.path.join(run_dir, "config.json"), "run configuration")
    if "mode" not in config or "data" not in config:
        raise ExportError(f"{os.path.join(run_dir, 'config.json')}: needs 'mode' and 'data' (prepared folder)")
    data_dir = config["data"]
    if not os.path.isabs(data_dir) and not os.path.isdir(data_dir):
        data_dir = os.path.join(run_dir, data_dir)
    w2v_path = os.path.join(data_dir, "word2vec.npy")
    try:
        word2vec = np.load(w2v_path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:
        raise ExportError(f"{w2v_path}: cannot load the word2vec matrix ({e})") from None
    vocab = _read_json(os.path.join(data_dir, "vocab.json"), "genre vocabulary")

    manifest = _read_json(os.path.join(data_dir, "manifest.json"), "prepared-data manifest") \
        if os.path.exists(os.path.join(data_dir, "manifest.json")) else {}
    cf_dim = int(manifest.get("cf_dim", C.CF_DIM))
    wanted = {
        "dropout": config.get("dropout"), "temperature": config.get("temperature"),
        "embed_dim": config.get("embed_dim"), "num_heads": config.get("num_heads"), "cf_dim": cf_dim,
    }
    if all(k in config for k in ("lambda_a2g", "lambda_a2p", "lambda_g2p")):
        wanted["lambdas"] = (config["lambda_a2g"], config["lambda_a2p"], config["lambda_g2p"])
    # pass only what build_model names and the config holds (a config also has epochs, lr, … )
    params = inspect.signature(model_lib.build_model).parameters
    kwargs = {k: v for k, v in wanted.items() if v is not None and k in params}
    if "compile" in params:
        kwargs["compile"] = False  # inference only: no optimizer
    try:
        model = model_lib.build_model(config["mode"], word2vec, **kwargs)
    except (ValueError, KeyError) as e:
        raise ExportError(f"{os.path.join(run_dir, 'config.json')}: cannot rebuild the model ({e})") from None
    _build(model, cf_dim)
    config = dict(config, data=data_dir)

    for fname in ("best.weights.h5", "last.weights.h5"):
        path = os.path.join(run_dir, "checkpoints", fname)
        if os.path.exists(path):
            try:
                model.load_weights(path)
            except Exception as e:  # noqa: BLE001 — h5py/keras raise many types for a bad file
                raise ExportError(f"{path}: cannot load weights into a {config['mode']} model ({e})") from None
            return model, config, vocab, path
    raise ExportError(f"{os.path.join(run_dir, 'checkpoints')}: no best.weights.h5 or last.weights.h5")


def _build(model, cf_dim):
    """Create the model's variables with one inference call on a dummy pipeline batch."""
    from cmir_tf.model import dummy_batch

    model(dummy_batch(cf_dim), training=False)


def export_run(run_dir, out_dir, version=None, name=DEFAULT_NAME, *, reports=None, report_model=None,
               options=None):
    """Export a training run (RUN_DIR from `python -m cmir_tf.train`) to OUT_DIR; returns an ExportResult.

    REPORTS: evaluation report files for the metadata's metrics (default: RUN_DIR/eval/ when present,
    see cmir_tf.zoo.find_reports); REPORT_MODEL picks the model of a multi-model report; OPTIONS: a
    cmir_tf.zoo.ZooOptions (links, author, e-mail, ONNX).
    """
    model, config, vocab, weights = load_run_model(run_dir)
    genre_encoder = getattr(model, "genre_encoder", None)
    dataset, extra = zoo.run_metadata(run_dir, config["data"], config["mode"], weights, reports=reports,
                                      report_model=report_model)
    return export_model(model.audio_encoder, genre_encoder, vocab, out_dir, version, name=name,
                        dataset=dataset, extra=extra, options=options)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.export",
        description="Export a training run: SavedModel for TF Serving (DIR/saved_model/<N>/ with signatures "
                    "serving_default, embed_waveform, tag_genres), frozen graph DIR/<NAME>.pb with model-zoo "
                    "metadata DIR/<NAME>.json, DIR/<NAME>.onnx, DIR/<NAME>.keras and, with a genre encoder, "
                    "the genre head DIR/<NAME>-genres.pb/.json. Written atomically; an existing version is "
                    "never overwritten.")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="training run folder (config.json, checkpoints/best.weights.h5 or last.weights.h5)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder (created if missing)")
    p.add_argument("--version", type=int, default=None, metavar="N",
                   help="SavedModel version folder (positive integer); default: 1 + the highest existing one")
    p.add_argument("--name", default=DEFAULT_NAME,
                   help=f"base name of the frozen graph and its Essentia JSON (default {DEFAULT_NAME})")
    zoo.add_arguments(p)
    args = p.parse_args(argv)
    try:
        res = export_run(args.run, args.out, args.version, args.name, **zoo.options_from_args(args))
    except (ExportError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"SavedModel version {res.version}: {res.saved_model_dir}")
    print(f"frozen graph: {res.graph_path}\nEssentia metadata: {res.metadata_path}")
    for label, path in (("ONNX", res.onnx_path), ("Keras", res.keras_path), ("genre head", res.genres_graph_path)):
        if path:
            print(f"{label}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
