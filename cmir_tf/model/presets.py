"""What a training run optimises: the paper's six modes and the contrastive strategies of the follow-up
study, as one composable description (no TensorFlow here; the model and the trainer read it).

A :class:`Preset` is the set of loss terms and the data they need:

* ``align`` — cross-modal NT-Xent terms: ``a2g`` (audio ↔ genres), ``a2p`` (audio ↔ CF vector),
  ``g2p`` (genres ↔ CF vector); the paper's contrastive modes.
* ``targets`` — the paper's baselines: a head on the audio embedding predicting the genres
  (``genre``) and/or regressing the CF vector (``cf``).
* ``audio_pairs`` — an intra-modal audio term (A-IM) named ``a2a_<source>``: each batch row's audio
  embedding against the other audio embeddings of the batch, its positive(s) given by the source:

  ``playlist``  pairs of different songs sharing a playlist (a song in at most one pair per epoch)
  ``artist``    pairs of different songs sharing an artist (a song may be in several pairs)
  ``genre``     pairs of songs sharing a genre, and the loss is semantically weighted: every song of
                the batch sharing genres is a soft positive (``losses.semantic_weights``)
  ``self``      self-supervised (SS): two crops of the same song

  A batch then holds 2m rows, the first songs of m pairs followed by their partners. ``hybrid``
  computes the cross-modal terms over all 2m rows too.
* ``mixup`` — α of the spectrogram mixup applied while training (gains ~ Beta(α, :data:`MIXUP_BETA`)).

The study is Meehan & Pauwels, "Evaluating Contrastive Methodologies for Music Representation Learning
Using Playlist Data" (ICASSP 2025; public PyTorch code gmeehan96/PlaylistContrastive). Its mixup
defaults are α = 7 with audio pairs (A-IM, SS, Hybrid) and α = 5 for cross-modal only, β = 2.
"""
from __future__ import annotations

import dataclasses

from cmir_tf.constants import MODES
from cmir_tf.data.pairs import AUDIO_PAIRS  # the pair sources the prepared data provides
from cmir_tf.errors import ConfigError

ALIGNMENTS = ("a2g", "a2p", "g2p")
TARGETS = ("genre", "cf")
MIXUP_BETA = 2.0
MIXUP_ALPHA_PAIRS = 7.0  # the study's α with audio pairs (A-IM, SS, Hybrid)
MIXUP_ALPHA_CROSS = 5.0  # and for cross-modal terms only
# Largest α accepted: Beta(1000, 2) gains already average 0.998 (mixup all but off), and a larger α in
# float32 (1e39 → inf) makes every gain NaN, which silently turns every weight non-finite.
MIXUP_ALPHA_MAX = 1000.0


@dataclasses.dataclass(frozen=True)
class Preset:
    """Loss terms and their data (module docstring)."""

    align: tuple = ()
    targets: tuple = ()
    audio_pairs: str | None = None
    mixup: float | None = None

    @property
    def intra_term(self) -> str | None:
        """The name of the intra-modal audio term (``a2a_playlist`` …), or None."""
        return f"a2a_{self.audio_pairs}" if self.audio_pairs else None

    @property
    def parts(self) -> tuple:
        """Every loss term, in the order history.csv lists them."""
        return self.align + self.targets + ((self.intra_term,) if self.audio_pairs else ())

    @property
    def rows_per_example(self) -> int:
        """Audio rows per example of the data: 2 for a pair (or a song's two crops), else 1."""
        return 2 if self.audio_pairs else 1

    @property
    def has_genre_encoder(self) -> bool:
        """Whether the model has a genre encoder (a term aligning the genres): its export then also holds
        the zero-shot genre tagger (``tag_genres``, ``GRAPH-genres.*``)."""
        return bool({"a2g", "g2p"} & set(self.parts))

    @property
    def history_columns(self) -> tuple:
        """The columns of the run's ``history.csv``: ``epoch``, then the training and validation values of
        ``loss`` and every term, each group sorted by name (Keras's CSVLogger sorts them)."""
        train = sorted(("loss",) + self.parts)
        return ("epoch", *train, *(f"val_{name}" for name in train))

    @property
    def uses_playlists(self) -> bool:
        """Whether the model needs playlists: CF vectors (``a2p``, ``g2p``, the ``cf`` target) or playlist pairs."""
        return bool({"a2p", "g2p", "cf"} & set(self.parts)) or self.audio_pairs == "playlist"

    @property
    def uses_genres(self) -> bool:
        """Whether the model needs the genre vocabulary."""
        return bool({"a2g", "g2p", "genre"} & set(self.parts)) or self.audio_pairs == "genre"


_ALL = ALIGNMENTS
PRESETS = {
    # the paper's six (sec. 3)
    "contr_cf_g": Preset(align=_ALL),
    "contr_g": Preset(align=("a2g",)),
    "contr_cf": Preset(align=("a2p",)),
    "bline_g": Preset(targets=("genre",)),
    "bline_cf": Preset(targets=("cf",)),
    "bline_cf_g": Preset(targets=("genre", "cf")),
    # the follow-up study's strategies, with its mixup
    "cm": Preset(align=_ALL, mixup=MIXUP_ALPHA_CROSS),
    "aim_playlist": Preset(audio_pairs="playlist", mixup=MIXUP_ALPHA_PAIRS),
    "aim_artist": Preset(audio_pairs="artist", mixup=MIXUP_ALPHA_PAIRS),
    "aim_genre": Preset(audio_pairs="genre", mixup=MIXUP_ALPHA_PAIRS),
    "ss": Preset(audio_pairs="self", mixup=MIXUP_ALPHA_PAIRS),
    "hybrid": Preset(align=_ALL, audio_pairs="playlist", mixup=MIXUP_ALPHA_PAIRS),
}
assert all(PRESETS[m].parts == MODES[m] for m in MODES)  # the paper's six report what they always did

DESCRIPTIONS = {
    "contr_cf_g": "A2G+A2P+G2P (the paper's full model)",
    "contr_g": "A2G",
    "contr_cf": "A2P",
    "bline_g": "audio encoder trained to predict the genres",
    "bline_cf": "audio encoder trained to regress the CF vector",
    "bline_cf_g": "both baseline heads",
    "cm": "the study's cross-modal only: A2G+A2P+G2P with mixup α=5",
    "aim_playlist": "A-IM: audio pairs sharing a playlist, mixup α=7",
    "aim_artist": "A-IM: audio pairs sharing an artist, mixup α=7",
    "aim_genre": "A-IM: audio pairs sharing a genre, semantically weighted NT-Xent, mixup α=7",
    "ss": "self-supervised: two crops of a song (second within ±625 frames), mixup α=7",
    "hybrid": "playlist audio pairs + A2G+A2P+G2P over all their songs, mixup α=7",
}


def parse_align(value) -> tuple | None:
    """``"a2g,g2p"`` / a list → the terms in canonical order; ``""`` / ``[]`` → none; None → None."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ALIGNMENTS]
    if unknown:
        raise ConfigError(f"align: unknown term {unknown[0]!r}; choose from {', '.join(ALIGNMENTS)}")
    return tuple(n for n in ALIGNMENTS if n in names)


def default_mixup_alpha(audio_pairs: str | None) -> float:
    """The study's α: 7 with audio pairs, 5 for cross-modal terms only."""
    return MIXUP_ALPHA_PAIRS if audio_pairs else MIXUP_ALPHA_CROSS


def resolve(mode: str, *, align=None, audio_pairs: str | None = None, mixup: float | None = None) -> Preset:
    """The preset ``mode`` with overrides: ``align`` (terms, ``""`` for none), ``audio_pairs`` (a source
    of :data:`AUDIO_PAIRS`), ``mixup`` (α; 0 turns it off). None keeps the preset's own."""
    if mode not in PRESETS:
        raise ConfigError(f"mode: unknown mode {mode!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[mode]
    align = parse_align(align)
    if audio_pairs is not None and audio_pairs not in AUDIO_PAIRS:
        raise ConfigError(f"audio pairs: unknown source {audio_pairs!r}; choose one of {', '.join(AUDIO_PAIRS)}")
    if base.targets and (align or audio_pairs):
        raise ConfigError(f"mode: the baseline {mode} takes no cross-modal terms or audio pairs; "
                          "start from a contrastive preset")
    if mixup is not None and not mixup >= 0:
        raise ConfigError(f"mixup: α must be ≥ 0 (0 turns it off), got {mixup}")
    if mixup is not None and not mixup <= MIXUP_ALPHA_MAX:
        raise ConfigError(f"mixup: α must be finite and at most {MIXUP_ALPHA_MAX:g} (gains ~ Beta(α, {MIXUP_BETA:g}) "
                          f"average α/(α+{MIXUP_BETA:g}): beyond, mixup changes nothing), got {mixup}")
    preset = dataclasses.replace(
        base, align=base.align if align is None else align, audio_pairs=audio_pairs or base.audio_pairs,
        mixup=base.mixup if mixup is None else (float(mixup) or None))
    if preset.audio_pairs == "self" and preset.align:
        raise ConfigError("audio pairs: self-supervised pairs (two crops of one song) cannot take cross-modal "
                          "terms: each song would be its own negative")
    if not preset.parts:
        raise ConfigError(f"align: {mode} with no cross-modal term and no audio pairs has nothing to train")
    return preset
