"""Audio files in, mel spectrograms out: the shared audio floor (floor 1).

- ``decoding``: audio files → 16 kHz mono float32 (libsndfile decoding, libsoxr resampling, an MP3 pipe);
- ``framing``: MPEG frame-chain and Ogg last-page checks run before libsndfile opens a file;
- ``frontend``: the Essentia-parity mel spectrogram in ``tf.signal`` and its 256-frame patches.

May import: the ground floor only (``cmir_tf.constants``, ``errors``, ``fileio``, ``cli``, ``lock``).

Public names (stable; import them from here: ``from cmir_tf.audio import …``):
``MelSpectrogram``, ``audio_extensions``, ``check_mpeg``, ``check_ogg``, ``decode``, ``load_audio``,
``mel_filterbank``, ``melspectrogram``, ``ogg_damage``, ``patches``, ``resample``.
"""
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "decoding": ["load_audio", "decode", "resample", "audio_extensions"],
        "framing": ["check_mpeg", "check_ogg", "ogg_damage"],
        "frontend": ["melspectrogram", "MelSpectrogram", "mel_filterbank", "patches"],
    },
)
