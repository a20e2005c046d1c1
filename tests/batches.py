"""A random batch in the pipeline's structure, for the model tests that need no prepared folder."""
import numpy as np

V = 11  # genre vocabulary of the tests


def make_batch(rng, batch=4, vocab=V):
    """``batch`` rows: random mels, 1–10 genres of ``vocab`` with their mask, random CF vectors."""
    mask = np.arange(10)[None] < rng.integers(1, 11, size=(batch, 1))
    genres = np.where(mask, rng.integers(0, vocab, size=(batch, 10)), 0).astype("int32")
    return {"mel": rng.normal(size=(batch, 256, 48)).astype("float32"), "genres": genres, "genre_mask": mask,
            "cf": rng.random(size=(batch, 300)).astype("float32"), "song_id": np.arange(batch, dtype="int64")}
