"""The paper's and the Melon dataset's fixed numbers, in one place (paper sec. 2–3; the sources: docs/DATASETS.md)."""

# Audio front end (Melon's Essentia chain): 16 kHz mono, 512-sample frames every 256 samples, 48 mel bands.
SAMPLE_RATE = 16000
FRAME_SIZE = 512
HOP_SIZE = 256
N_BANDS = 48  # F_a
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
DB_FLOOR = -200.0  # lin2db clips power at 1e-10, times 2 → -200 dB
MELON_FRAMES = 1876  # 30 s at 16 kHz with centred frames

# Model inputs
PATCH_FRAMES = 256  # T_a: frames per audio patch / random crop
MAX_GENRES = 10  # T_w: genres per song fed to the genre encoder
W2V_DIM = 200  # F_w
CF_DIM = 300  # F_cf
EMBED_DIM = 128  # size of every φ (shared embedding space)
FEATURE_DIM = 1024  # flattened CNN output of the audio encoder
HIDDEN_DIM = 512  # FF_a1 / FF_cf1 width

# Training defaults (paper sec. 3.2)
TEMPERATURE = 0.1
BATCH_SIZE = 128
LEARNING_RATE = 1e-4
DROPOUT = 0.5
NUM_HEADS = 4

SPLITS = ("train", "val", "test")
# what `train --variant` can train: the paper's text, or the authors' published code (cmir_tf.model.published)
VARIANTS = ("paper", "published")
CROP_WINDOW = 1300  # frames: the published variant's training crops come from the first 1300 of a song

# The six presets (paper sec. 3) → the losses each reports: contrastive alignments, or baseline targets
MODES = {
    "contr_cf_g": ("a2g", "a2p", "g2p"),
    "contr_g": ("a2g",),
    "contr_cf": ("a2p",),
    "bline_g": ("genre",),
    "bline_cf": ("cf",),
    "bline_cf_g": ("genre", "cf"),
}

# Seeds of a run and of the input pipelines: TensorFlow op seeds, in [0, SEED_LIMIT) (seed + 1 is used too)
SEED_LIMIT = 2**31 - 1

# Downstream datasets (docs/DATASETS.md)
JAMENDO_CATEGORIES = ("genre", "instrument", "moodtheme")  # MTG-Jamendo autotagging splits
