"""Prepare's per-song work in worker processes, with a progress bar on stderr.

Workers are ``spawn``-ed, never forked (a fork after TensorFlow's or OpenMP's threads have started can
deadlock), so a script that calls a function using them must guard its top level with
``if __name__ == "__main__":``. The worker function and its items must be picklable.
"""
from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting songs on stderr (disabled: a no-op with the same methods)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="song", disable=not enabled, file=sys.stderr, mininterval=0.5)


def imap(fn, items, workers: int, *, ordered: bool = True):
    """Yield ``fn(item)`` for each item: in ``min(workers, len(items))`` spawned processes when that is
    more than one, else in this process (in order). ``ordered=False`` yields results as they finish."""
    items = list(items)
    if workers > 1 and len(items) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(items))) as pool:
            yield from (pool.imap if ordered else pool.imap_unordered)(fn, items)
    else:
        for item in items:
            yield fn(item)
