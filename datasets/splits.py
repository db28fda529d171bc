"""Seeded, stratified train/test splits (explicit numpy Generator; no global RNG state)."""

from __future__ import annotations

import numpy as np

from advbench.errors import DatasetError


def stratified_split(labels: np.ndarray, n_test: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into (train, test) index arrays with exactly ``n_test`` test items.

    Each class contributes to the test set in proportion to its size (largest-remainder rounding),
    and every class keeps at least one training example when it has more than one item.  The result
    depends only on ``labels``, ``n_test`` and ``seed``; both index arrays come back shuffled (so a
    prefix of the training set is not sorted by class).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_test < n:
        raise DatasetError(f"cannot split {n} items into a test set of {n_test}; need 0 < n_test < {n}")
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (n_test / n)
    take = np.floor(quota).astype(np.int64)
    cap = np.where(counts > 1, counts - 1, counts)
    take = np.minimum(take, cap)
    # hand out the remaining test slots by largest fractional part, then to any class with room left
    order = np.argsort(-(quota - take), kind="stable")
    while take.sum() < n_test:
        room = [c for c in order if take[c] < cap[c]] or [c for c in order if take[c] < counts[c]]
        for c in room[: n_test - int(take.sum())]:
            take[c] += 1
    train_parts, test_parts = [], []
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        test_parts.append(idx[: take[c]])
        train_parts.append(idx[take[c] :])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test
