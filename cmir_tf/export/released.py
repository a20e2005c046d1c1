"""The authors' released audio encoders (andrebola/contrastive-mir-learning, MIT licence) in cmir_tf.

The published repository ships six trained audio encoders, ``models/<experiment>/audio_encoder.pt``
(PyTorch ``state_dict``s of its ``AudioEncoder``, saved by torch 1.2), one per experiment of the paper
(:data:`EXPERIMENTS`). This module

- reads such a file without PyTorch and without running pickled code (:mod:`cmir_tf.export.torch_pickle`);
- maps its 65 entries onto cmir_tf's :class:`~cmir_tf.model.encoders.AudioEncoder` (:func:`load_audio_encoder`),
  the same architecture (docs/FIDELITY.md row 6): PyTorch feeds bands × time (B, 1, 48, 256) and
  cmir_tf time × bands (B, 256, 48), so each 3×3 kernel (out, in, bands, time) becomes Keras's
  (time, bands, in, out); the last conv map is (512 channels, 1 band, 2 frames), flattened
  channel-major by PyTorch (index c·2 + t) and frame-major by Keras (index t·512 + c), so ``fc1``'s
  input rows are permuted accordingly;
- writes a complete export of it (:func:`export_published`): the same files as ``export --run``;
- and says how the published ``encode.py`` embeds audio (its front end is
  :mod:`cmir_tf.embed.published`: ``embed --published-frontend``).

The published ``encode.py`` computes, for an audio file: Essentia's ``MonoLoader`` at 16 kHz, **the
centre 29.1 s** (``round(29.1 · 16000)`` = 465,600 samples from ``(n − 465,600) // 2``; a shorter file
raises and is skipped), Melon's mel chain (the same as :mod:`cmir_tf.audio.frontend`), non-overlapping
256-frame patches (``librosa.util.frame``: the incomplete tail dropped), the model in eval mode, and it
saves **the first output** of the model, the 1024-d ``features`` (the flattened conv output before the
feed-forward block), not the 128-d embedding.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.export.torch_pickle import read_state_dict

REPOSITORY = "andrebola/contrastive-mir-learning"
REPOSITORY_URL = "https://github.com/andrebola/contrastive-mir-learning"
LICENCE = "MIT"
EXPERIMENTS = {
    "contrastive_MF_gnr": "contrastive learning of audio, genres and playlists (A2G + A2P + G2P losses)",
    "contrastive_gnr": "contrastive learning of audio and genres (A2G loss)",
    "contrastive_MF": "contrastive learning of audio and playlists (A2P loss on the CF vectors)",
    "baseline_MF_gnr": "baseline: audio encoder trained to predict genres and CF vectors",
    "baseline_gnr": "baseline: audio encoder trained to predict genres",
    "baseline_MF": "baseline: audio encoder trained to regress the CF vectors",
}
N_CONV_BLOCKS = 7


# ------------------------------------------------------------------------------- weight mapping
def _bn(sd, prefix):
    return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _fc1_permutation(channels=512, frames=2):
    """Keras row r = t·channels + c of fc1 ← PyTorch column c·frames + t."""
    r = np.arange(channels * frames)
    return (r % channels) * frames + r // channels


def torch_feature_order(features):
    """cmir_tf's 1024-d ``features`` (frame-major: index t·512 + c) → the published model's order
    (PyTorch's channel-major flatten: index c·2 + t), the vectors encode.py saves."""
    features = np.asarray(features)
    return features[..., np.argsort(_fc1_permutation(features.shape[-1] // 2))]


def keras_weights(sd) -> dict:
    """A published AudioEncoder state_dict {name: array} → {cmir_tf sublayer name: [its weights]}."""
    out = {"input_bn": _bn(sd, "audio_encoder.0")}
    for i in range(N_CONV_BLOCKS):
        p = f"audio_encoder.{i + 1}"
        out[f"conv{i}"] = [np.transpose(sd[f"{p}.conv.weight"], (3, 2, 1, 0)), sd[f"{p}.conv.bias"]]
        out[f"conv{i}_bn"] = _bn(sd, f"{p}.bn")
    w1 = sd["fc_audio.0.weight"]
    out["fc1"] = [w1.T[_fc1_permutation(w1.shape[1] // 2)], sd["fc_audio.0.bias"]]
    out["fc1_bn"] = _bn(sd, "fc_audio.1")
    out["fc2"] = [sd["fc_audio.4.weight"].T, sd["fc_audio.4.bias"]]
    out["ln"] = [sd["fc_audio.5.weight"], sd["fc_audio.5.bias"]]
    return out


def expected_keys():
    """The 65 entries of a published AudioEncoder state_dict."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = [f"audio_encoder.0.{k}" for k in bn]
    for i in range(1, N_CONV_BLOCKS + 1):
        keys += [f"audio_encoder.{i}.conv.weight", f"audio_encoder.{i}.conv.bias"]
        keys += [f"audio_encoder.{i}.bn.{k}" for k in bn]
    keys += ["fc_audio.0.weight", "fc_audio.0.bias"] + [f"fc_audio.1.{k}" for k in bn]
    keys += ["fc_audio.4.weight", "fc_audio.4.bias", "fc_audio.5.weight", "fc_audio.5.bias"]
    return keys


def _check_keys(sd, where):
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    want = expected_keys()
    missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        raise DataError(f"{where}: not a published AudioEncoder state_dict (missing {missing[:3]}"
                        f"{'…' if len(missing) > 3 else ''}, unexpected {extra[:3]}{'…' if len(extra) > 3 else ''})")
    return sd


def load_audio_encoder(path):
    """Build cmir_tf's AudioEncoder (float32, inference) holding the weights of a published ``.pt``.

    Returns ``(encoder, info)``; info: ``{"sha256", "embed_dim", "entries"}``. Raises DataError for a
    file that is not such a state_dict (shapes are checked entry by entry) and RefusedPickle for one
    whose pickle would run code.
    """
    from cmir_tf.model.encoders import AudioEncoder

    where = os.fspath(path)
    sd = _check_keys(read_state_dict(path), where)
    sd = {k: np.asarray(v, np.float32) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    embed_dim = int(sd["fc_audio.4.weight"].shape[0])
    enc = AudioEncoder(embed_dim=embed_dim, synchronized=False, name="audio_encoder")
    enc(tf.zeros([1, C.PATCH_FRAMES, C.N_BANDS]), training=False)
    for layer_name, weights in keras_weights(sd).items():
        layer = getattr(enc, layer_name, None) or _block_layer(enc, layer_name)
        have = [tuple(v.shape) for v in layer.weights]
        got = [tuple(w.shape) for w in weights]
        if have != got:
            raise DataError(f"{where}: {layer_name}: shapes {got} do not fit the published architecture {have}")
        layer.set_weights(weights)
    return enc, {"sha256": _sha256(where), "embed_dim": embed_dim, "entries": len(sd)}


def _block_layer(enc, name):
    """conv<i> / conv<i>_bn of the encoder's block lists."""
    i = int(name[4:].split("_")[0])
    return enc.conv_bns[i] if name.endswith("_bn") else enc.convs[i]


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ export
def experiment_name(checkpoint, experiment=None):
    """The experiment a checkpoint belongs to: EXPERIMENT, else its folder's name if that is one of
    :data:`EXPERIMENTS` (``models/<experiment>/audio_encoder.pt``); ConfigError otherwise."""
    if experiment is None:
        folder = os.path.basename(os.path.dirname(os.path.abspath(os.fspath(checkpoint))))
        if folder not in EXPERIMENTS:
            raise ConfigError(f"--experiment: {os.fspath(checkpoint)} is not in a folder named after an "
                              f"experiment; name it ({', '.join(EXPERIMENTS)})")
        return folder
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"--experiment: {experiment!r} is not one of the published experiments "
                          f"({', '.join(EXPERIMENTS)})")
    return experiment


def description(experiment):
    """The zoo ``description`` of an imported checkpoint: the paper, the experiment, the licence."""
    return (f"Audio encoder released with Ferraro et al., 2021, \"Enriched Music Representations with Multiple "
            f"Cross-modal Contrastive Learning\" (IEEE SPL 28), experiment {experiment}: "
            f"{EXPERIMENTS[experiment]}; weights from {REPOSITORY} (models/{experiment}/audio_encoder.pt, "
            f"{LICENCE} licence), converted by cmir_tf. Maps 256-frame 48-band mel-spectrogram patches "
            "(Melon's front end) to 128-d embeddings and 1024-d features.")


def export_published(checkpoint, out_dir, version=None, name=None, *, experiment=None, reports=None,
                     report_model=None, options=None):
    """Import a published ``audio_encoder.pt`` and export it like a run (see ``cmir_tf.export.exporter``).

    The metadata names the paper (``citation``), the experiment and the licence (``description`` and
    ``cmir_tf.model.published``); ``dataset.metrics`` come from REPORTS (evaluation reports of this export,
    ``python -m cmir_tf.evaluate``), else ``{}``. Returns the export's ExportResult.
    """
    from cmir_tf.export import exporter as export
    from cmir_tf.export import zoo
    from cmir_tf.export.reports import metrics_from_reports

    experiment = experiment_name(checkpoint, experiment)
    encoder, info = load_audio_encoder(checkpoint)
    metrics, source = ({}, None)
    if reports:
        metrics, source = metrics_from_reports(reports, model=report_model, candidates=(experiment,))
    extra = {"mode": "published", "published": {
        "repository": REPOSITORY_URL, "experiment": experiment, "licence": LICENCE,
        "file": f"models/{experiment}/audio_encoder.pt", "sha256": info["sha256"],
        "inference": "the published encode.py saves the 1024-d `features` of the centre 29.1 s "
                     "(python -m cmir_tf.embed --published-frontend)"}}
    if source:
        extra["metrics_source"] = source
    return export.export_model(encoder, None, None, out_dir, version, name=name or export.DEFAULT_NAME,
                               description=description(experiment), dataset=zoo.dataset_info(None, metrics),
                               extra=extra, options=options)
