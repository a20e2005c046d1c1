"""Test signals the benchmarks share (not a benchmark itself)."""
import numpy as np


def music(seconds, rate, seed):
    """Stereo music-like signal: decaying harmonic notes on an eighth-note grid, panned, plus noise-burst
    drums on the beat (so the codecs work as hard as on music: tonal and transient content)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros((n, 2), np.float32)
    t = np.arange(int(0.6 * rate), dtype=np.float32) / rate
    env = np.exp(-4 * t).astype(np.float32)
    for start in range(0, n, int(0.25 * rate)):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        tone = sum((0.5 / k) * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in range(1, 7)) * env
        m, pan = min(len(t), n - start), rng.uniform(0.2, 0.8)
        out[start:start + m, 0] += (0.25 * pan) * tone[:m]
        out[start:start + m, 1] += (0.25 * (1 - pan)) * tone[:m]
    hit = int(0.08 * rate)
    decay = np.exp(-40 * np.arange(hit) / rate).astype(np.float32)
    for start in range(0, n - hit, int(0.5 * rate)):
        out[start:start + hit] += (0.3 * rng.standard_normal(hit).astype(np.float32) * decay)[:, None]
    return np.clip(out, -1, 1)
