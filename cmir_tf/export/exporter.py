"""Export a trained audio encoder for its consumers: TF Serving, Essentia, ONNX runtimes, Keras.

    python -m cmir_tf.export --run RUN_DIR --out DIR [--version N] [--name NAME] [--link-base URL]
        [--author NAME] [--email ADDRESS] [--report FILE ...] [--report-model NAME] [--onnx | --no-onnx]
    python -m cmir_tf.export --published-checkpoint FILE.pt [--experiment NAME] --out DIR [...]
        (the authors' released audio encoders, `cmir_tf.export.released`)

writes, atomically (everything is staged in a temporary folder inside DIR, then renamed into place;
nothing under DIR changes unless every part was written):

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

`N` defaults to one more than the highest version already in DIR/saved_model; an existing version is
never overwritten (ExportError). The top-level files describe the highest version (what TF Serving and
`embed` use; their `version` field says which): a new highest version replaces them and removes the
other top-level files earlier exports wrote; a lower `--version` writes its version folder only. Only
files an export wrote (listed in DIR/.cmir-export-files) are ever replaced or removed: any other
file in the way is refused before any work (exit 2). A second export into the same folder while one
runs gets exit 4 (the folder's lock, `cmir_tf.lock`).

The folder's layout, versions and publishing are owned by `cmir_tf.export.exportdir`, the frozen graph by
`cmir_tf.export.frozen`, the zoo files (metadata, ONNX, Keras, genre head) by `cmir_tf.export.zoo` (export/README.md
documents every metadata key). A run folder is read through `cmir_tf.train.rundir.RunDir` (the model is
rebuilt from its `model.json`); the genre names come from the run's prepared folder (`cmir_tf.data.prepared`).

`tag_genres` (and the genres asset) exists only for models with a genre encoder (contr_g, contr_cf_g):
each vocabulary genre's φ_w is computed once at export time by the GenreEncoder on that single genre
(inference mode) and stored in the SavedModel as a (V, 128) constant of unit vectors.
"""
import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.errors import ConfigError, ExportError
from cmir_tf.export import zoo
from cmir_tf.export.exportdir import ExportDir
from cmir_tf.export.frozen import (EMBEDDINGS_NODE, FEATURES_NODE, INPUT_NODE, check_core_ops, freeze_audio_encoder,
                                   graph_op_types)
from cmir_tf.lock import folder_lock
from cmir_tf.model import compat
from cmir_tf.train.rundir import RunDir

DEFAULT_NAME = "cmir-audio-encoder"
GENRES_ASSET = "genres.txt"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where an export went; usable as a path (os.fspath gives the export folder DIR)."""

    out_dir: str
    version: int
    saved_model_dir: str
    graph_path: str | None  # None (and every top-level path): a version below the highest, its folder only
    metadata_path: str | None
    onnx_path: str | None = None
    keras_path: str | None = None
    genres_graph_path: str | None = None
    genres_metadata_path: str | None = None
    notes: tuple = ()
    genres_onnx_path: str | None = None

    def __fspath__(self):
        return self.out_dir

    def outputs(self) -> list[tuple[str, str]]:
        """Every file or folder this export wrote, labelled, in the order a user would look for them."""
        found = [(f"SavedModel version {self.version} (TF Serving)", self.saved_model_dir),
                 ("frozen graph (Essentia)", self.graph_path), ("Essentia metadata", self.metadata_path),
                 ("ONNX", self.onnx_path), ("Keras", self.keras_path),
                 ("genre head graph", self.genres_graph_path), ("genre head ONNX", self.genres_onnx_path),
                 ("genre head metadata", self.genres_metadata_path)]
        return [(label, path) for label, path in found if path]


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
        from cmir_tf.audio import frontend  # floor 1; imported here so export's frozen-graph path needs only TF

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


# ---------------------------------------------------------------------------------------- export
def export_model(audio_encoder, genre_encoder, vocab, out_dir, version=None, *, name=DEFAULT_NAME,
                 description=None, dataset=None, extra=None, options=None):
    """Write DIR/saved_model/<N>/ and the top-level files (see the module doc); returns an ExportResult.

    audio_encoder: callable `(mel (B,256,48), training=False) -> (embeddings (B,D), features (B,F))`.
    genre_encoder: GenreEncoder (for tag_genres) or None. vocab: [{index, code, name}] (used only with
    a genre encoder). Nothing under DIR changes unless every part was written.
    """
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name or ""):
        raise ConfigError(f"name: {name!r} must be a plain file name (letters, digits, . _ -)")
    out = ExportDir(out_dir)
    out.check_writable(name, top_level=False)  # a file in the way is named before any work
    with folder_lock(out.path):  # a second export into this folder: BusyError (exit 4)
        version = out.resolve_version(version)
        out.check_writable(name, top_level=out.is_highest(version))
        return _export_locked(out, audio_encoder, genre_encoder, vocab, version, name,
                              dict(description=description, dataset=dataset, extra=extra, options=options))


def _export_locked(out, audio_encoder, genre_encoder, vocab, version, name, zoo_args):
    """export_model's work, with the folder locked and checked, into ``version``."""
    genre_table, names = None, None
    if genre_encoder is not None:
        names = genre_names(vocab)
        genre_table = genre_embeddings(genre_encoder, len(names))

    graph_def = freeze_audio_encoder(audio_encoder)
    check_core_ops(graph_op_types(graph_def), f"{name}.pb")
    out_shapes = [audio_encoder(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]), training=False)[i].shape[-1] for i in (0, 1)]

    with out.staging() as staging:
        staged_sm = os.path.join(staging, "saved_model")
        _write_saved_model(audio_encoder, genre_table, names, staged_sm, staging)
        for mg in compat.read_saved_model_proto(os.path.join(staged_sm, "saved_model.pb")).meta_graphs:
            check_core_ops(graph_op_types(mg.graph_def), f"{out.version_dir(version)}/saved_model.pb")
        staged = zoo.stage_files(staging, name=name, version=version, audio_encoder=audio_encoder,
                                 graph_def=graph_def, genre_table=genre_table, genre_names=names,
                                 embed_dim=int(out_shapes[0]), feature_dim=int(out_shapes[1]), **zoo_args)
        published = out.publish(staged_sm, version, name, staged.files)
    notes = tuple(staged.notes)
    if "graph" not in published:
        notes += (f"top-level files left as they were: they describe version {out.latest_version()}, the highest "
                  f"(the one TF Serving and embed use); version {version} is in {published['saved_model']} only",)
    return ExportResult(out.path, version, published["saved_model"], published.get("graph"),
                        published.get("metadata"), published.get("onnx"), published.get("keras"),
                        published.get("genres_graph"), published.get("genres_metadata"), notes,
                        published.get("genres_onnx"))


# ----------------------------------------------------------------------------------- from a run
def load_run_model(run_dir):
    """Rebuild the run's model from its configuration (``RunDir.model_config``) and load best (else last) weights.

    Returns (model, config, vocab, weights_path): config is the run's config.json (``data`` resolved),
    vocab the prepared folder's genre vocabulary. The model is rebuilt in float32 whatever precision
    it was trained in (exports are always float32) and is not compiled.
    """
    from cmir_tf.data.prepared import PreparedFacts
    from cmir_tf.model.contrastive import ContrastiveModel, dummy_batch

    run = RunDir(run_dir)
    config = run.read_config()
    model_config = run.model_config()
    facts = PreparedFacts(config["data"])
    try:
        model = ContrastiveModel.from_config(dict(model_config, cnn_dtype=None))
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{run}: cannot rebuild the model from its configuration ({e})") from None
    model(dummy_batch(model.cf_dim), training=False)  # create the variables
    path = run.weights_to_export()
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001 — h5py/keras raise many types for a bad file
        raise ExportError(f"{path}: cannot load weights into a {model.mode} model ({e})") from None
    return model, config, facts.vocab, str(path)


def export_run(run_dir, out_dir, version=None, name=DEFAULT_NAME, *, reports=None, report_model=None, options=None):
    """Export a training run (RUN_DIR from `python -m cmir_tf.train`) to OUT_DIR; returns an ExportResult.

    The metadata's ``dataset`` counts come from the run's prepared folder, its ``metrics`` from REPORTS
    (evaluation report files; default: those in the run folder, see ``zoo.find_reports``), REPORT_MODEL
    naming the model of a multi-model report; OPTIONS: ``zoo.ZooOptions`` (link base, author, ONNX).
    """
    model, config, vocab, weights = load_run_model(run_dir)
    genre_encoder = getattr(model, "genre_encoder", None)
    description, strategy = zoo.describe_strategy(model.mode, model.preset, model.lambdas, model.lambda_audio)
    dataset, extra = zoo.run_metadata(run_dir, config["data"], config["mode"], weights, reports=reports,
                                      report_model=report_model, strategy=strategy)
    if model.variant != "paper":  # what was trained: docs/FIDELITY.md's `--variant published` column
        extra["variant"] = model.variant
    return export_model(model.audio_encoder, genre_encoder, vocab, out_dir, version, name=name,
                        description=description, dataset=dataset, extra=extra, options=options)
