"""Model-zoo files of an export: Essentia-zoo metadata, ONNX, the zero-shot genre head, a Keras file.

:mod:`cmir_tf.export.exporter` writes the SavedModel and the frozen audio encoder; this module adds what a
model zoo (Essentia's, https://essentia.upf.edu/models.html) ships beside them, staged in the export's
staging folder and published with it:

    <name>.json          the encoder's metadata in the zoo's schema (:func:`encoder_metadata`)
    <name>.onnx          the same encoder for ONNX runtimes (opset 13, dynamic batch), optional extra
                         ``pip install -e ".[onnx]"`` (:func:`convert_onnx`)
    <name>.keras         the same encoder as a Keras 3 model of built-in layers (:func:`keras_model`)
    <name>-genres.pb     the zero-shot genre tagger as a classification head on the encoder's
    <name>-genres.json   embeddings, and its metadata (:func:`freeze_genre_head`,
    <name>-genres.onnx   :func:`genre_head_metadata`); only for models with a genre encoder

Metadata follows the zoo's files key by key (types and meaning); what the zoo has no key for is under
keys of our own (``inference.patch_size``, ``inference.melspectrogram``, the ``cmir_tf`` block).
Nothing in an export names a local path: a run is named by its folder name and the SHA-256 of its
``config.json``. Evaluation figures come from the reports ``python -m cmir_tf.evaluate`` writes
(``reports.run_report_files``, ``reports.metrics_from_reports``). The conversions live in
:mod:`cmir_tf.export.formats`.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import sys

import numpy as np

from cmir_tf import __version__ as PACKAGE_VERSION
from cmir_tf import constants as C
from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import ConfigError, DataError, ExportError
from cmir_tf.export.exportdir import GENRES_SUFFIX, file_names
from cmir_tf.export.formats import (HEAD_INPUT, HEAD_OUTPUT, ONNX_EXTRA_HINT, ONNX_OPSET, check_parity, convert_onnx,
                                    freeze_genre_head, keras_model, onnx_missing, onnx_outputs, unit_rows)
from cmir_tf.export.reports import metrics_from_reports, run_report_files
from cmir_tf.train.rundir import RunDir

MELON_DATASET = "Melon Playlist Dataset"
MELON_CITATION = """@inproceedings{ferraro2021melon,
  title     = {Melon Playlist Dataset: a public dataset for audio-based playlist generation and music tagging},
  author    = {Ferraro, Andres and Kim, Yuntae and Lee, Soohyeon and Kim, Biho and Jo, Namjun and Lim, Semi and
               Lim, Suyon and Jang, Jungtaek and Kim, Sehwan and Serra, Xavier and Bogdanov, Dmitry},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP 2021)},
  pages     = {536--540},
  year      = {2021}
}"""
PAPER_CITATION = """@article{ferraro2021enriched,
  title   = {Enriched Music Representations with Multiple Cross-modal Contrastive Learning},
  author  = {Ferraro, Andres and Favory, Xavier and Drossos, Konstantinos and Kim, Yuntae and Bogdanov, Dmitry},
  journal = {IEEE Signal Processing Letters},
  volume  = {28},
  pages   = {733--737},
  year    = {2021},
  doi     = {10.1109/LSP.2021.3071082}
}"""
ENCODER_DESCRIPTION = (
    "Audio encoder of a cross-modal contrastive model (Ferraro et al., 2021: audio aligned with genre word "
    "embeddings and playlist co-occurrence) trained with cmir_tf; maps 256-frame 48-band mel-spectrogram "
    "patches (Melon's front end) to 128-d embeddings.")
# What each part of a training strategy does, for the description of the exported model.
_TERM_TEXT = {
    "a2g": "audio aligned with genre word embeddings (A2G)",
    "a2p": "audio aligned with playlist co-occurrence vectors (A2P)",
    "g2p": "genre embeddings aligned with playlist vectors (G2P)",
    "genre": "a head predicting the genres",
    "cf": "a head regressing the playlist co-occurrence (CF) vector",
}
_PAIR_TEXT = {"playlist": "audio pairs of songs sharing a playlist", "artist": "audio pairs of songs sharing an artist",
              "genre": "audio pairs of songs sharing a genre (semantically weighted NT-Xent)",
              "self": "two crops of each song (self-supervised)"}


def describe_strategy(mode, preset, lambdas=(1.0, 1.0, 1.0), lambda_audio=1.0) -> tuple[str, dict]:
    """(description, strategy) of a model trained with ``preset`` (``presets.Preset``) in ``mode``: the
    description names its actual loss terms, audio pairs and mixup; ``strategy`` records them for the
    metadata's ``cmir_tf`` section (``align``, ``targets``, ``audio_pairs``, ``mixup``, ``lambdas``)."""
    weights = dict(zip(("a2g", "a2p", "g2p"), lambdas))
    parts = [f"{_TERM_TEXT[t]}, λ={weights[t]:g}" for t in preset.align]
    parts += [_TERM_TEXT[t] for t in preset.targets]
    if preset.audio_pairs:
        parts.append(f"contrastive {_PAIR_TEXT[preset.audio_pairs]}, λ={float(lambda_audio):g}")
    mix = f"mixup α={preset.mixup:g} (β=2)" if preset.mixup else "no mixup"
    kind = "Baseline audio encoder" if preset.targets else "Audio encoder of a contrastive model"
    text = (f"{kind} trained with cmir_tf (mode {mode}: {'; '.join(parts)}; {mix}), after Ferraro et al., "
            f"2021; maps 256-frame 48-band mel-spectrogram patches (Melon's front end) to 128-d embeddings.")
    strategy = {"align": list(preset.align), "targets": list(preset.targets), "audio_pairs": preset.audio_pairs,
                "mixup": preset.mixup, "lambdas": [float(x) for x in lambdas], "lambda_audio": float(lambda_audio)}
    return text, strategy


def _embedding_space(extra) -> str:
    """The encoder output's description: the space its training aligned audio with."""
    align = ((extra or {}).get("strategy") or {}).get("align")
    if align is None:
        return "embeddings in the shared audio/genre/playlist space (compare with cosine)"
    others = [m for t, m in (("a2g", "genre"), ("a2p", "playlist")) if t in align]
    if others:
        return f"embeddings in the space shared with {' and '.join(others)} embeddings (compare with cosine)"
    return "audio embeddings (compare with cosine); not aligned with genre or playlist embeddings"


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ABS_PATH_RE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


@dataclasses.dataclass(frozen=True)
class ZooOptions:
    """What a publisher chooses for the zoo files of an export.

    link_base: URL of the folder the files will be published in; each file's ``link`` is
        ``link_base/<file name>`` ("" → ``link`` is "", the zoo's value for "no download").
    author, email: the publisher of the files (the zoo's contact for the model); "" when not given.
    onnx: True = write ``<name>.onnx`` or fail; False = do not; None = write it when tf2onnx is
        installed, else skip with one line on stderr.
    opset: ONNX opset of the conversion.
    """

    link_base: str = ""
    author: str = ""
    email: str = ""
    onnx: bool | None = None
    opset: int = ONNX_OPSET

    def __post_init__(self):
        if self.link_base and not re.match(r"^https?://[^\s/]+", self.link_base):
            raise ConfigError(f"--link-base: {self.link_base!r} is not an http(s) URL")
        if self.email and not _EMAIL_RE.match(self.email):
            raise ConfigError(f"--email: {self.email!r} is not an e-mail address")
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not 9 <= self.opset <= 18:
            raise ConfigError(f"ONNX opset must be an integer in 9..18, got {self.opset!r}")
        if self.onnx and onnx_missing():  # asked for explicitly: fail before any work, not after
            raise ConfigError(f"--onnx: {onnx_missing()}; install the extra: {ONNX_EXTRA_HINT}")

    def link(self, filename):
        """The zoo's ``link`` of FILENAME: a URL under link_base, or "" without one."""
        return f"{self.link_base.rstrip('/')}/{filename}" if self.link_base else ""


# ------------------------------------------------------------------------------------------ dataset
def dataset_size(manifest):
    """The zoo's ``dataset.size`` (a plain string) from a prepared folder's manifest, "" without counts.

    E.g. ``"520,000 songs (train 416,000, val 52,000, test 52,000), 148,826 playlists"``.
    """
    counts = (manifest or {}).get("counts") or {}
    try:
        parts = {str(k): int(v) for k, v in counts.items()}
    except (TypeError, ValueError, AttributeError):
        return ""
    if not parts:
        return ""
    text = f"{sum(parts.values()):,} songs"
    if len(parts) > 1:
        text += " (" + ", ".join(f"{k} {v:,}" for k, v in parts.items()) + ")"
    playlists = ((manifest or {}).get("stats") or {}).get("playlists")
    if isinstance(playlists, int) and not isinstance(playlists, bool) and playlists > 0:
        text += f", {playlists:,} playlists"
    return text


def dataset_info(manifest=None, metrics=None):
    """The zoo's ``dataset`` block: name, citation (BibTeX), size (string), metrics ({} without any)."""
    return {"name": MELON_DATASET, "citation": MELON_CITATION, "size": dataset_size(manifest),
            "metrics": dict(metrics or {})}


def _normalise_dataset(dataset):
    out = dataset_info()
    for key, value in (dataset or {}).items():
        out[key] = value
    out["size"] = out["size"] if isinstance(out["size"], str) else str(out["size"])
    out["citation"] = out["citation"] or MELON_CITATION
    out["metrics"] = dict(out["metrics"] or {})
    return out


# --------------------------------------------------------------------------------------- metadata
def _common(name, version, options, *, kind, description, model_types, classes, dataset):
    return {
        "name": name,
        "type": kind,
        "link": options.link(f"{name}.pb"),
        "version": str(version),
        "description": description,
        "author": options.author,
        "email": options.email,
        "release_date": datetime.date.today().isoformat(),
        "framework": "tensorflow",
        "framework_version": _tf_version(),
        "classes": list(classes),
        "model_types": list(model_types),
        "dataset": _normalise_dataset(dataset),
    }


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def melspectrogram_parameters():
    """The front end the encoder expects (Melon's Essentia chain), for the metadata."""
    return {
        "sample_rate": C.SAMPLE_RATE, "frame_size": C.FRAME_SIZE, "hop_size": C.HOP_SIZE,
        "window": "hann (symmetric, not normalized)", "spectrum": "magnitude", "number_bands": C.N_BANDS,
        "low_frequency_bound": C.MEL_FMIN, "high_frequency_bound": C.MEL_FMAX, "warping_formula": "slaneyMel",
        "normalize": "unit_tri", "type": "power", "compression": "lin2db scale 2 (20*log10, floor -200 dB)",
        "centred_frames": True, "layout": "(frames, 48) float32 dB",
    }


def encoder_metadata(name, version, *, embed_dim, feature_dim, options=None, description=None, dataset=None,
                     model_types=("frozen_model",), files=None, extra=None):
    """The zoo metadata of the audio encoder NAME.pb (an embedding extractor)."""
    options = options or ZooOptions()
    meta = _common(name, version, options, kind="Music embeddings", description=description or ENCODER_DESCRIPTION,
                   model_types=model_types, classes=[], dataset=dataset)
    meta["schema"] = {
        "inputs": [{"name": "melspectrogram", "type": "float", "shape": [C.PATCH_FRAMES, C.N_BANDS]}],
        "outputs": [
            {"name": "embeddings", "type": "float", "shape": [1, embed_dim], "op": "LayerNormalization",
             "description": _embedding_space(extra),
             "output_purpose": "embeddings"},
            {"name": "features", "type": "float", "shape": [1, feature_dim], "op": "Flatten",
             "description": "flattened output of the convolutional blocks (input of the feed-forward block)",
             "output_purpose": ""},
        ],
    }
    meta["citation"] = PAPER_CITATION
    meta["inference"] = {
        "sample_rate": C.SAMPLE_RATE,
        "algorithm": "TensorflowPredict2D",
        "patch_size": C.PATCH_FRAMES,
        "patch_hop_size": C.PATCH_FRAMES,
        "melspectrogram": melspectrogram_parameters(),
    }
    meta["cmir_tf"] = _cmir_block(version, files, extra)
    check_no_local_paths(meta, f"{name}.json")
    return meta


def genre_head_metadata(name, version, classes, *, embed_dim, options=None, dataset=None,
                        model_types=("frozen_model",), files=None, extra=None):
    """The zoo metadata of NAME-genres.pb, a classification head on the embeddings of NAME.pb."""
    options = options or ZooOptions()
    head = f"{name}{GENRES_SUFFIX}"
    description = (
        f"Zero-shot genre tagger on the embeddings of {name}: cosine similarity of an audio embedding to each "
        "vocabulary genre's embedding (the genre encoder's output for that genre alone), in [-1, 1]; scores "
        "rank genres, they are not probabilities. Not trained on labelled audio: the genre space is the "
        "one the contrastive training aligned the audio with.")
    meta = _common(head, version, options, kind="Music genre tagging (zero-shot)", description=description,
                   model_types=model_types, classes=classes, dataset=dict(dataset or {}, metrics={}))
    meta["schema"] = {
        "inputs": [{"name": HEAD_INPUT, "type": "float", "shape": [embed_dim]}],
        "outputs": [{"name": HEAD_OUTPUT, "type": "float", "shape": [1, len(classes)], "op": "MatMul",
                     "description": "cosine similarity to each genre in `classes` (same order)",
                     "output_purpose": "predictions"}],
    }
    meta["citation"] = PAPER_CITATION
    meta["inference"] = {
        "sample_rate": C.SAMPLE_RATE,
        "algorithm": "TensorflowPredict2D",
        "embedding_model": {"algorithm": "TensorflowPredict2D", "model_name": name,
                            "link": options.link(f"{name}.pb")},
    }
    meta["cmir_tf"] = _cmir_block(version, files, extra)
    check_no_local_paths(meta, f"{head}.json")
    return meta


def _cmir_block(version, files, extra):
    return {"package_version": PACKAGE_VERSION, "saved_model_version": int(version), "batch_dimension": "dynamic",
            "files": dict(files or {}), **(extra or {})}


def check_no_local_paths(obj, where, _key=""):
    """Raise ExportError if any string in OBJ looks like an absolute local path (not meant to be published)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_no_local_paths(v, where, f"{_key}.{k}" if _key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_no_local_paths(v, where, f"{_key}[{i}]")
    elif isinstance(obj, str) and _ABS_PATH_RE.match(obj):
        raise ExportError(f"{where}: {_key} holds a local path ({obj!r}); an export must not name the "
                          "trainer's file system")


# ----------------------------------------------------------------------------- staging, publishing
@dataclasses.dataclass
class Staged:
    """Files staged for one export: {kind: staged path} (kinds of ``exportdir.FILE_KINDS``), the
    one-line notes shown to the user, and the measured {file kind: max abs difference} checks."""

    files: dict
    notes: list
    parity: dict


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _write_json(path, meta):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")


class _Stager:
    """Writes one export's top-level files into its staging folder, by kind (``exportdir.FILE_KINDS``)."""

    def __init__(self, staging, name, version, options):
        self.staging, self.name, self.version, self.options = staging, name, version, options
        self.names = file_names(name)
        self.files, self.notes, self.parity = {}, [], {}

    def onnx_wanted(self) -> bool:
        """Whether to write ONNX files: asked for (fail if the extra is missing), refused, or when installed."""
        want = self.options.onnx
        missing = onnx_missing() if want is not False else None
        if want and missing:
            raise ExportError(f"{self.name}.onnx requested but {missing}: {ONNX_EXTRA_HINT}")
        if want is None and missing:
            self.notes.append(f"ONNX skipped ({missing}): {ONNX_EXTRA_HINT}")
        return want is not False and not missing

    def write(self, kind, content) -> None:
        """Stage ``content`` (bytes, or a dict written as indented UTF-8 JSON) as the file of ``kind``."""
        path = self.files[kind] = os.path.join(self.staging, self.names[kind])
        if isinstance(content, dict):
            _write_json(path, content)
        else:
            _write_bytes(path, content)

    def onnx(self, kind, graph_def, feeds: dict, want: dict, name: str, doc: str) -> None:
        """Convert ``graph_def`` to ONNX, check its outputs against ``want`` on ``feeds``, stage it."""
        model = convert_onnx(graph_def, list(feeds), list(want), opset=self.options.opset, name=name, doc=doc,
                             version=self.version)
        data = model.SerializeToString()
        got = onnx_outputs(data, feeds)
        if got is not None:
            self.parity[kind] = max(check_parity(self.names[kind], got[k], v) for k, v in want.items())
        self.write(kind, data)

    def keras(self, audio_encoder, probe, want: dict) -> None:
        """The encoder as a ``.keras`` file of built-in layers, checked against ``want`` on ``probe``."""
        try:
            kmodel = keras_model(audio_encoder)
        except ExportError as e:
            self.notes.append(f"Keras file skipped ({e})")
            return
        got = kmodel(probe, training=False)
        self.parity["keras"] = max(check_parity(self.names["keras"], got[k], v) for k, v in want.items())
        self.files["keras"] = os.path.join(self.staging, self.names["keras"])
        kmodel.save(self.files["keras"])


def stage_files(staging, *, name, version, audio_encoder, graph_def, genre_table=None, genre_names=None,
                embed_dim, feature_dim, description=None, dataset=None, extra=None, options=None, log=None):
    """Write the zoo files of one export into STAGING; returns a :class:`Staged`.

    ``graph_def``: the frozen encoder (written as ``<name>.pb``). With a GENRE_TABLE (V, D) and
    GENRE_NAMES, the genre head too. ONNX and Keras files are checked against the TensorFlow encoder
    (max abs difference ≤ 1e-4 on random mel patches) before they are staged.
    """
    import tensorflow as tf

    options = options or ZooOptions()
    log = log or (lambda line: print(line, file=sys.stderr))
    st = _Stager(staging, name, version, options)
    with_onnx = st.onnx_wanted()
    st.write("graph", graph_def.SerializeToString())
    probe = np.random.default_rng(0).normal(-40, 15, (2, C.PATCH_FRAMES, C.N_BANDS)).astype(np.float32)
    emb, feat = (np.asarray(t) for t in audio_encoder(tf.constant(probe), training=False))
    want = {"embeddings": emb, "features": feat}
    if with_onnx:
        st.onnx("onnx", graph_def, {"melspectrogram": probe}, want, name, description or ENCODER_DESCRIPTION)
    st.keras(audio_encoder, probe, want)
    rel = {"frozen_model": st.names["graph"], "SavedModel": f"saved_model/{int(version)}"}
    rel.update({k: st.names[k] for k in ("onnx", "keras") if k in st.files})
    types = ["frozen_model", "SavedModel"] + [k for k in ("onnx", "keras") if k in st.files]
    dataset = _normalise_dataset(dataset)
    if genre_table is not None:
        _stage_genre_head(st, genre_table, genre_names, emb, with_onnx, embed_dim, dataset, extra)
        rel["genres_head"] = st.names["genres_graph"]
    st.write("metadata", encoder_metadata(name, version, embed_dim=embed_dim, feature_dim=feature_dim,
                                          options=options, description=description, dataset=dataset,
                                          model_types=types, files=rel, extra=extra))
    for line in st.notes:
        log(f"[cmir_tf] export: {line}")
    return Staged(st.files, st.notes, st.parity)


def _stage_genre_head(st, genre_table, genre_names, emb, with_onnx, embed_dim, dataset, extra) -> None:
    """The zero-shot genre tagger as a zoo classification head: graph (+ ONNX) and its metadata."""
    head_def = freeze_genre_head(genre_table)
    st.write("genres_graph", head_def.SerializeToString())
    types, rel = ["frozen_model"], {"frozen_model": st.names["genres_graph"]}
    if with_onnx:
        want = {HEAD_OUTPUT: unit_rows(emb) @ unit_rows(genre_table).T}
        st.onnx("genres_onnx", head_def, {HEAD_INPUT: emb}, want, f"{st.name}{GENRES_SUFFIX}",
                f"zero-shot genre tagger on the embeddings of {st.name}")
        types.append("onnx")
        rel["onnx"] = st.names["genres_onnx"]
    st.write("genres_metadata", genre_head_metadata(st.name, st.version, list(genre_names), embed_dim=embed_dim,
                                                    options=st.options, dataset=dataset, model_types=types,
                                                    files=rel, extra=extra))


def run_metadata(run_dir, data_dir, mode, weights, *, reports=None, report_model=None, strategy=None):
    """(dataset, extra) of the metadata for a training run: counts from the prepared folder's manifest,
    metrics from the run's reports (REPORTS, else ``reports.run_report_files(run)``), the run named without paths,
    and the training STRATEGY (of :func:`describe_strategy`) when given."""
    try:
        manifest = PreparedData(data_dir).read_manifest() or None
    except DataError:  # the counts are a courtesy: an unreadable manifest leaves `size` empty
        manifest = None
    run = RunDir(run_dir)
    ident = run.identity()
    paths = list(reports) if reports else run_report_files(run)
    metrics, source = ({}, None)
    if paths:
        metrics, source = metrics_from_reports(paths, model=report_model, candidates=(ident["name"], mode))
    extra = {"mode": mode, "run": ident, "weights": os.path.basename(weights)}
    if strategy is not None:
        extra["strategy"] = strategy
    if source:
        extra["metrics_source"] = source
    return dataset_info(manifest, metrics), extra
