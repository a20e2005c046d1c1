"""Configuration of a training run: :class:`TrainConfig`, the config file, the command-line flags.

Precedence: built-in defaults (the paper's, sec. 3.2) ← ``--config FILE`` (JSON or YAML, the flags'
names with ``_`` or ``-``) ← command-line flags; with no ``--data`` the embedded default's shorter
schedule (``embedded.EMBEDDED_DEFAULTS``) replaces the built-in defaults. This is the command-line
layer: its errors name the flags. The effective configuration is what a run folder's ``config.json``
holds (``rundir.RunDir``).

:func:`model_config` is the one mapping from a configuration (and the prepared folder's facts) to the
model's own configuration, ``ContrastiveModel.get_config()`` — what ``model.json`` holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from cmir_tf import constants as C
from cmir_tf.errors import ConfigError
from cmir_tf.model import presets
from cmir_tf.model.distribute import JIT_COMPILE, STRATEGIES
from cmir_tf.model.precision import PRECISIONS, cnn_dtype
from cmir_tf.train.embedded import EMBEDDED_DEFAULTS

MODES = tuple(presets.PRESETS)  # the paper's six, then the follow-up study's strategies
# A bare --mixup (argparse would run a string const through float) or "mixup: default" in a config
# file: the study's α for the strategy (presets.default_mixup_alpha).
MIXUP_DEFAULT = "default"
_BARE_MIXUP = object()
# The library's preset errors start with the parameter; the command line names the flag instead.
# The loss terms each --lambda-* weighs (a baseline's genre head takes λ_A2G's place, its CF head λ_A2P's).
LAMBDAS = {"lambda_a2g": ("a2g", "genre"), "lambda_a2p": ("a2p", "cf"), "lambda_g2p": ("g2p",)}
_FLAG_OF = {"mode": "--mode", "align": "--align", "audio pairs": "--audio-pairs", "mixup": "--mixup"}


@dataclasses.dataclass
class TrainConfig:
    """Every knob of a training run. Defaults are the paper's (sec. 3.2) unless stated."""

    data: str | None = None  # prepared folder; None → the embedded synthetic default
    mode: str = "contr_cf_g"
    variant: str = "paper"  # or "published": what the published code trains (cmir_tf.model.published)
    published_view: bool = False  # the published `view` mixing time and bands in training/validation
    random_val_crops: bool = False  # validation on random crops (seeded per epoch), as the published code
    epochs: int = 10
    steps_per_epoch: int | None = None  # None → one pass over the training split
    validation_steps: int | None = None  # None → one pass over the validation split
    batch_size: int = C.BATCH_SIZE  # global batch
    lr: float = C.LEARNING_RATE
    weight_decay: float = 0.0
    temperature: float = C.TEMPERATURE
    dropout: float = C.DROPOUT
    num_heads: int = C.NUM_HEADS
    embed_dim: int = C.EMBED_DIM
    lambda_a2g: float = 1.0
    lambda_a2p: float = 1.0
    lambda_g2p: float = 1.0
    lambda_audio: float = 1.0
    audio_pairs: str | None = None  # playlist / artist / genre / self; None → the mode's
    align: str | None = None  # cross-modal terms "a2g,a2p,g2p"; None → the mode's, "" → none
    mixup: float | None = None  # α of the Beta(α, 2) mixup gains; None → the mode's, 0 → off
    seed: int = 0
    precision: str = "float32"  # or mixed_float16 / mixed_bfloat16: the CNN blocks in 16 bits (cmir_tf.model.precision)
    jit_compile: str = "auto"  # XLA for each replica's step: auto = on for GPUs (distribute.resolve_jit_compile)
    read_parallelism: int | None = None  # shards read at once per host; None → pipeline.host_defaults
    parse_parallelism: int | None = None  # parse / decode calls in flight per host; None → the cores
    input_threads: int | None = None  # the input pipeline's own threads per host; None → the cores
    device_prefetch: int = 2  # batches copied ahead onto each replica's device (0: none)
    out: str | None = None  # run dir; None → runs/<mode>
    strategy: str = "auto"
    devices: int | None = None
    backup_every: int = 20  # steps between resumable backups (and at every epoch end)
    keep_last: bool = True  # checkpoints/last.weights.h5 besides best (export takes best)
    keep_backup: bool = True  # False: a completed run drops the backup's weights and optimizer (state.json stays)
    export: bool = True  # export the audio encoder when training ends (embedded default)
    export_dir: str | None = None  # None → export/<run name>
    synth_songs: int | None = None  # embedded default: size of the synthetic Melon set
    synth_playlists: int | None = None

    def validate(self) -> None:
        self._check_types()
        if self.variant not in C.VARIANTS:
            raise ConfigError(f"--variant: unknown variant {self.variant!r}; choose one of {', '.join(C.VARIANTS)}")
        if self.variant == "published" and self.weight_decay:
            raise ConfigError("--weight-decay: --variant published already uses the published coupled L2 1e-4 "
                              "(not a decoupled decay); leave --weight-decay at 0")
        if self.mode not in MODES:
            raise ConfigError(f"--mode: unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.jit_compile not in JIT_COMPILE:
            raise ConfigError(f"--jit-compile: unknown setting {self.jit_compile!r}; choose one of {', '.join(JIT_COMPILE)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy: unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name in ("epochs", "batch_size", "num_heads", "embed_dim", "backup_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be ≥ 1, got {getattr(self, name)}")
        if self.device_prefetch < 0:
            raise ConfigError(f"--device-prefetch: must be ≥ 0, got {self.device_prefetch}")
        for name in ("steps_per_epoch", "validation_steps", "devices", "read_parallelism", "parse_parallelism",
                     "input_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be ≥ 1, got {value}")
        self._check_numbers()
        try:
            preset = self.preset()
        except ConfigError as exc:
            what, _, rest = str(exc).partition(":")
            raise ConfigError(f"{_FLAG_OF.get(what, what)}:{rest}") from None
        if (self.variant == "published" or self.random_val_crops) and preset.audio_pairs:
            flag = "--variant published" if self.variant == "published" else "--random-val-crops"
            raise ConfigError(f"{flag}: not with audio pairs (--audio-pairs / a strategy that uses them); "
                              "the published code trains only the paper's cross-modal and baseline modes")
        self._check_weights(preset)

    def _check_numbers(self) -> None:
        """Real-valued settings are finite and in range; the seed is a pipeline's (``pipeline.checked_seed``)."""
        for name in ("lr", "temperature"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"--{name}: must be > 0 and finite, got {getattr(self, name)}")
        for name in ("weight_decay", *LAMBDAS, "lambda_audio"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"--{name.replace('_', '-')}: must be ≥ 0 and finite, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout: must be in [0, 1), got {self.dropout}")
        if not 0 <= self.seed < C.SEED_LIMIT:
            raise ConfigError(f"--seed: must be an integer in [0, {C.SEED_LIMIT}), got {self.seed}")

    def _check_weights(self, preset: presets.Preset) -> None:
        """A weight other than 1 for a term the mode lacks would be silently ignored: refused, naming the
        flag and the mode; so is a mode whose every term weighs 0 (nothing to train)."""
        for name, terms in LAMBDAS.items():
            if getattr(self, name) != 1.0 and not set(terms) & set(preset.parts):
                raise ConfigError(f"--{name.replace('_', '-')}: mode {self.mode} has no {' or '.join(terms)} term; "
                                  "drop the flag or choose a mode with it")
        if self.lambda_audio != 1.0 and not preset.audio_pairs:
            raise ConfigError(f"--lambda-audio: mode {self.mode} has no audio pairs (a2a term); drop the flag or "
                              "add --audio-pairs")
        used = [getattr(self, n) for n, terms in LAMBDAS.items() if set(terms) & set(preset.parts)]
        if not any(used + ([self.lambda_audio] if preset.audio_pairs else [])):
            raise ConfigError(f"every loss term of mode {self.mode} weighs 0: nothing to train")

    def preset(self) -> presets.Preset:
        """The resolved strategy: the mode's preset with this run's ``align``/``audio_pairs``/``mixup``."""
        return presets.resolve(self.mode, align=self.align, audio_pairs=self.audio_pairs, mixup=self.mixup)

    def _check_types(self) -> None:
        """Each value has its field's type (a config file can hold ``"three"`` or ``8.5``): ConfigError."""
        for f in dataclasses.fields(self):
            value, kinds = getattr(self, f.name), str(f.type).replace(" ", "").split("|")
            if value is None and "None" in kinds:
                continue
            ok = {"int": type(value) is int, "float": type(value) in (int, float), "str": isinstance(value, (str, os.PathLike)),
                  "bool": type(value) is bool}
            if not any(ok.get(k, True) for k in kinds if k != "None"):
                what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
                raise ConfigError(f"--{f.name.replace('_', '-')}: must be {what.get(kinds[0], kinds[0])}, got {value!r}")

    @classmethod
    def from_saved(cls, values: dict) -> "TrainConfig":
        """The configuration a run folder's ``config.json`` records (keys it lacks take the defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def lambdas(self) -> tuple[float, float, float]:
        return (self.lambda_a2g, self.lambda_a2p, self.lambda_g2p)


def _check_inputs(cfg: TrainConfig, facts) -> None:
    """A mode using genres or playlists on a folder without them → ``ConfigError`` naming what is missing
    and the modes that train on it."""
    lacks = {"genres": facts.n_genres == 0, "playlists": not getattr(facts, "has_playlists", True)}

    def needs(p, what):
        return p.uses_genres if what == "genres" else p.uses_playlists
    missing = [w for w, lacking in lacks.items() if lacking and needs(cfg.preset(), w)]
    if not missing:
        return
    why = {"genres": "its library had no genre tags, or it was prepared with --ignore-genres",
           "playlists": "its library had no .m3u playlist and no album: no album tag, no Artist/Album/track folders"}
    trainable = sorted(m for m, p in presets.PRESETS.items()
                       if not any(lacking and needs(p, w) for w, lacking in lacks.items()))
    w = missing[0]
    raise ConfigError(f"{facts.path}: mode {cfg.mode!r} (with audio pairs {cfg.audio_pairs or 'of the mode'}) "
                      f"needs {w}{' (CF vectors or playlist pairs)' if w == 'playlists' else ''}, but this prepared "
                      f"folder has none ({why[w]}); modes without {' or '.join(k[:-1] for k, v in lacks.items() if v)} "
                      f"terms train: {', '.join(trainable)}")


def model_config(cfg: TrainConfig, facts) -> dict[str, Any]:
    """``ContrastiveModel`` config of a run of ``cfg`` on a prepared folder (``facts``: n_genres, w2v_dim, cf_dim).

    A folder without genres (a music library with no genre tags, or prepared with ``--ignore-genres``)
    refuses the modes that use them, naming the missing input; so does a library folder without playlists
    or albums (``manifest.json`` → ``library.playlists_from: "none"``) for the modes using CF or playlists."""
    _check_inputs(cfg, facts)
    return {
        "name": cfg.mode,
        "mode": cfg.mode,
        "vocab_size": facts.n_genres,
        "w2v_dim": facts.w2v_dim,
        "dropout": cfg.dropout,
        "temperature": cfg.temperature,
        "lambdas": list(cfg.lambdas),
        "embed_dim": cfg.embed_dim,
        "num_heads": cfg.num_heads,
        "cf_dim": facts.cf_dim,
        "cnn_dtype": cnn_dtype(cfg.precision),
        "align": cfg.align,
        "audio_pairs": cfg.audio_pairs,
        "mixup": cfg.mixup,
        "lambda_audio": cfg.lambda_audio,
        "variant": cfg.variant,
        "published_view": cfg.published_view,
    }


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML config file (keys as flags, ``-`` or ``_``), checking every key is known."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 — any parser error becomes one clear message
        raise ConfigError(f"--config {path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option → value, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"--config {path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        out[name] = value
    return out


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.train",
        description=(
            "Train the cross-modal contrastive model, a baseline, or a contrastive strategy of the follow-up study "
            "(intra-modal audio pairs, hybrid, self-supervised, mixup) on prepared Melon TFRecords. "
            "With no arguments: synthesise a small Melon set, prepare it, train contr_cf_g briefly and export it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config file
    )
    p.add_argument("--data", help="prepared folder (output of `python -m cmir_tf.prepare`); default: the embedded synthetic set, made if absent")
    p.add_argument("--mode", choices=MODES, metavar="MODE", help="what to train: " + "; ".join(f"{m}: {d}" for m, d in presets.DESCRIPTIONS.items()) + " [default contr_cf_g]")
    p.add_argument("--variant", choices=C.VARIANTS, help="paper: the paper's text (docs/FIDELITY.md); published: what the authors' published code trains where it differs by choice (their genre and CF encoders, coupled L2 1e-4 with Adam ε 1e-8, −log(·+1e-5) in the loss, MSE for the CF baseline, crops from the first 1300 frames); needs a folder from `prepare --variant published` [default paper]")
    p.add_argument("--published-view", action="store_true", help="feed each training and validation crop through the published code's data.view(-1, 1, 48, 256), which mixes time and bands (inference does not); not part of --variant published, as it looks unintended")
    p.add_argument("--random-val-crops", action="store_true", help="validate on random crops, a new draw every epoch, as the published code (default: fixed centre crops, so the best checkpoint does not depend on the draw)")
    p.add_argument("--audio-pairs", choices=presets.AUDIO_PAIRS, help="add (or change) the intra-modal audio term: pairs of songs sharing a playlist / an artist / a genre (semantically weighted), or self: two crops of a song; a batch then holds batch-size/2 pairs [default: the mode's]")
    p.add_argument("--self-supervised", dest="audio_pairs", action="store_const", const="self", help="same as --audio-pairs self")
    p.add_argument("--align", help="cross-modal terms, comma-separated among a2g,a2p,g2p ('' for none) [default: the mode's]")
    p.add_argument("--mixup", nargs="?", const=_BARE_MIXUP, type=float, metavar="ALPHA", help=f"mix each training spectrogram with another of its batch, gain ~ Beta(ALPHA, {presets.MIXUP_BETA:g}); bare: the study's ALPHA ({presets.MIXUP_ALPHA_PAIRS:g} with audio pairs, {presets.MIXUP_ALPHA_CROSS:g} otherwise); 0: off [default: the mode's]")
    p.add_argument("--lambda-audio", type=float, help="weight of the intra-modal audio term [default 1]")
    p.add_argument("--epochs", type=int, help=f"number of epochs [default 10; embedded default {EMBEDDED_DEFAULTS['epochs']}]")
    p.add_argument("--steps-per-epoch", type=int, help="training steps per epoch [default: one pass over the training split]")
    p.add_argument("--validation-steps", type=int, help="validation steps per epoch [default: one pass over the validation split]")
    p.add_argument("--batch-size", type=int, help=f"global batch of audio rows, split across replicas: songs, or two rows per audio pair [default {C.BATCH_SIZE}]")
    p.add_argument("--lr", type=float, help=f"Adam learning rate [default {C.LEARNING_RATE}]")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW); the published code used 1e-4 [default 0]")
    p.add_argument("--temperature", type=float, help=f"NT-Xent temperature τ [default {C.TEMPERATURE}]")
    p.add_argument("--dropout", type=float, help=f"dropout probability p of every encoder [default {C.DROPOUT}]")
    p.add_argument("--num-heads", type=int, help=f"self-attention heads of the genre encoder [default {C.NUM_HEADS}]")
    p.add_argument("--embed-dim", type=int, help=f"size of the shared embedding space [default {C.EMBED_DIM}]")
    p.add_argument("--lambda-a2g", type=float, help="weight of the audio-to-genre loss [default 1]")
    p.add_argument("--lambda-a2p", type=float, help="weight of the audio-to-playlist loss [default 1]")
    p.add_argument("--lambda-g2p", type=float, help="weight of the genre-to-playlist loss [default 1]")
    p.add_argument("--precision", choices=PRECISIONS, help="float32 (the paper's numerics); mixed_float16: the audio CNN's convolution blocks in float16 with dynamic loss scaling, for GPUs without bfloat16 (V100, T4); mixed_bfloat16: the same blocks in bfloat16 (A100/H100, CPUs with AVX512-BF16, ≈1.8× faster there). Weights, embeddings and losses stay float32; exports are always float32 [default float32]")
    p.add_argument("--jit-compile", choices=JIT_COMPILE, help="XLA-compile each replica's forward and backward pass: auto = on when every replica is a GPU (single host); off on CPU, where XLA made the float32 step 2–7× slower here, except mixed_float16 on one CPU replica (float16 gradients have no fast CPU kernel); on is refused for several CPU replicas [default auto]")
    p.add_argument("--read-parallelism", type=int, help="TFRecord shards read at once by this host's input pipeline (with --seed it also sets the record order) [default: the host's cores, at least 8, at most 64]")
    p.add_argument("--parse-parallelism", type=int, help="parse / crop / decode calls in flight in this host's input pipeline [default: the host's cores]")
    p.add_argument("--input-threads", type=int, help="threads of this host's input pipeline, apart from the training step's [default: the host's cores]")
    p.add_argument("--device-prefetch", type=int, help="batches copied ahead onto each replica's device while a step runs; 0 keeps them in host memory [default 2]")
    p.add_argument("--seed", type=int, help="seed of weights, crops and shuffling [default 0]")
    p.add_argument("--out", help="run directory; rerunning with the same one resumes [default runs/<mode>]")
    p.add_argument("--config", help="JSON or YAML file with any of these options (keys like `batch_size`); flags override it")
    p.add_argument("--strategy", choices=STRATEGIES, help="auto: mirrored when several devices are visible, else default; default: one device; mirrored: MirroredStrategy over all local devices; multiworker: MultiWorkerMirroredStrategy from TF_CONFIG [default auto]")
    p.add_argument("--devices", type=int, help="split the CPU into N logical devices (to run MirroredStrategy on one machine)")
    p.add_argument("--backup-every", type=int, help="steps between resumable backups [default 20]")
    p.add_argument("--no-export", dest="export", action="store_false", help="do not export the audio encoder at the end")
    p.add_argument("--export-dir", help="where to export [default export/<run name>]")
    p.add_argument("--keep-last", action=argparse.BooleanOptionalAction, help="keep checkpoints/last.weights.h5 (the latest epoch's weights) besides best.weights.h5, which export takes; --no-keep-last saves one model's weights of disk [default: keep]")
    p.add_argument("--keep-backup", action=argparse.BooleanOptionalAction, help="keep the resumable backup (weights + Adam's moments) when the run completes; --no-keep-backup deletes them then (state.json stays, so a rerun knows the run is done, but more --epochs need --restart); a killed run resumes either way [default: keep]")
    p.add_argument("--restart", action="store_true", help="start a clean run: the run directory's earlier files (history, curves, checkpoints, logs, backup, eval) are moved into previous/<UTC time>/")
    p.add_argument("--synth-songs", type=int, help="embedded default only: songs of the synthetic Melon set")
    p.add_argument("--synth-playlists", type=int, help="embedded default only: playlists of the synthetic Melon set")
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse flags over the config file over the defaults. Returns (config, restart)."""
    ns = vars(build_arg_parser().parse_args(argv))
    restart = bool(ns.pop("restart", False))
    values: dict[str, Any] = {}
    if "config" in ns:
        values.update(load_config_file(ns.pop("config")))
    values.update(ns)
    if values.get("mixup") is _BARE_MIXUP or values.get("mixup") == MIXUP_DEFAULT:
        preset = presets.PRESETS.get(values.get("mode", TrainConfig.mode), presets.Preset())
        values["mixup"] = presets.default_mixup_alpha(values.get("audio_pairs") or preset.audio_pairs)
    if values.get("data") is None:  # the embedded default trains briefly
        for key, value in EMBEDDED_DEFAULTS.items():
            values.setdefault(key, value)
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg, restart
