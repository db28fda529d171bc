"""Shards of one evaluation: deterministic sets of batches (``--shard I/N``).

Shard ``I`` of ``N`` (1-based, as the user writes it) holds a contiguous block of batch indices; the blocks
of ``1/N`` .. ``N/N`` cover every batch once.  Shards of one config share its hash, so their batches commit
to the same run in the store, and whichever shard commits the last batch merges the record.
"""

from __future__ import annotations

import re

from advbench.errors import ConfigError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``1 <= I <= N``; ``None`` -> ``(1, 1)`` (the whole run)."""
    if text is None:
        return 1, 1
    match = _SHARD.match(str(text))
    if not match:
        raise ConfigError(f"--shard takes I/N (shard I of N, counting from 1), e.g. --shard 2/4; got '{text}'")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: I must be between 1 and N (N >= 1), e.g. 1/{max(count, 2)} .. "
                          f"{max(count, 2)}/{max(count, 2)}")
    return index, count


def shard_batches(n_batches: int, index: int, count: int) -> range:
    """The batch indices of shard ``index`` of ``count`` (1-based) among ``n_batches`` batches.

    >>> [list(shard_batches(7, i, 3)) for i in (1, 2, 3)]
    [[0, 1], [2, 3], [4, 5, 6]]
    """
    start = (index - 1) * n_batches // count
    stop = index * n_batches // count
    return range(start, stop)
