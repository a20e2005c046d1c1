"""cmir_tf: Enriched music representations with multiple cross-modal contrastive learning, in TF/Keras."""
from setuptools import find_packages, setup

# ONNX copies of the exported models. No upper pins: pip takes the newest onnx / onnxruntime that install
# beside the TensorFlow it resolved (measured: tensorflow 2.21 + numpy 2 -> onnx 1.23, onnxruntime 1.32;
# tensorflow 2.17 + numpy 1.26 -> onnx 1.17, onnxruntime 1.20, pinned in ci/constraints-oldest.txt).
ONNX = [
    "tf2onnx>=1.17",
    "onnx>=1.17",
    "onnxruntime>=1.20",
]

setup(
    name="cmir_tf",
    version="0.1.0",
    description=(
        "Cross-modal contrastive music representations (Ferraro et al., 2021) in TensorFlow/Keras: "
        "Melon -> TFRecords -> tf.data -> contrastive model -> SavedModel / Essentia graph -> evaluation"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cmir_tf", "cmir_tf.*"]),
    python_requires=">=3.10,<3.14",
    # Supported and tested (README "Supported versions"): tensorflow 2.17 (with numpy 1.26, the oldest
    # pair, CI's fast tests) to 2.21 (with numpy 2, the newest, CI's whole suite). tensorflow-io is not a
    # dependency: nothing imports it (decoding is libsndfile + libsoxr; docs/AUDIO.md), and its native
    # ops load against tensorflow 2.17 alone, so requiring it would pin everyone's TensorFlow there.
    install_requires=[
        "tensorflow>=2.17,<2.22",
        # the rooms' __init__ export their public names lazily (SPEC 1), so importing one room imports no TF
        "lazy_loader>=0.4",
        # audio decoding (cmir_tf.audio): wheels bundle libsndfile 1.2 with libvorbis, libFLAC, mpg123;
        # 0.13 is the first with the bitrate-mode argument the tests write CBR mp3 with
        "soundfile>=0.13",
        # resampling to 16 kHz (libsoxr); see docs/AUDIO.md for the measurements behind both
        "soxr>=0.5",
        # train writes TensorBoard logs (RUN/logs/); TensorFlow 2.21 no longer installs tensorboard itself
        "tensorboard>=2.17",
        "keras>=3.15,<3.16",  # private hooks fenced in cmir_tf/compat.py: tested with 3.15.1
        "numpy>=1.26,<3",
        "scipy>=1.10",
        "implicit>=0.7,<0.8",
        "gensim>=4.3,<5",
        "scikit-learn>=1.3",
        "annoy>=1.17,<2",
        "iterative-stratification>=0.1.9",
        "tqdm>=4.60",
        "google-crc32c>=1.5",  # the pair pipeline checks each record's TFRecord checksums (cmir_tf.tfrecords)
        "matplotlib>=3.7",
        "plotly>=5.14",  # python -m cmir_tf.explore writes its interactive map with it (plotly.js inlined)
        "pyyaml>=6",
        "mutagen>=1.45",  # a music library's tags (cmir_tf.library_tags): ID3, Vorbis comments, FLAC, MP4
    ],
    extras_require={
        # ONNX copies of the exported models (python -m cmir_tf.export writes NAME.onnx when these import).
        # pip takes the newest onnx / onnxruntime that install beside the TensorFlow it chose (above).
        "onnx": ONNX,
        "test": [
            *ONNX,  # the ONNX files are checked against the SavedModel with onnxruntime
            "pytest>=7",
            # two test processes (pytest.ini: -n 2, a test file per process): the suite's CPU-bound
            # training tests leave a core idle while others spawn processes or wait on them
            "pytest-xdist>=3.5",
            # Essentia is the reference the exported graph and the mel front end are checked against;
            # it is only ever imported in a child process (it cannot share a process with tensorflow).
            "essentia-tensorflow==2.1b6.dev1389",
            # trec_eval's own C code: the playlist metrics are checked against it
            "pytrec-eval-terrier>=0.5.6",
            # drives Debian's headless chromium + chromium-driver (ci/browser.sh) in the explore page's test
            "selenium>=4.10",
        ],
    },
    entry_points={
        "console_scripts": [
            "cmir-synth=cmir_tf.synth:main",
            "cmir-prepare=cmir_tf.prepare:main",
            "cmir-train=cmir_tf.train:main",
            "cmir-export=cmir_tf.export:main",
            "cmir-embed=cmir_tf.embed:main",
            "cmir-similar=cmir_tf.similar:main",
            "cmir-explore=cmir_tf.explore:main",
            "cmir-evaluate=cmir_tf.evaluate:main",
        ],
    },
)
