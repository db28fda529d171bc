"""Progress bars on stderr for long work (training, attack cascades)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; redrawn at most every 10 s when stderr is not a terminal (log files, CI)."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=0.1 if interactive else 10.0, dynamic_ncols=interactive, **kwargs)


@contextmanager
def step_ticks(bar: tqdm, steps: int) -> Iterator[Callable[[], None]]:
    """A ``tick()`` for one piece of work of ``steps`` known steps whose loop lives elsewhere (an attack engine).

    Call ``tick()`` from something that loop calls once per step (a loss closure, a forward hook): each call
    advances ``bar`` by one, never past ``steps``; when the block ends without error the bar is topped up to
    ``steps`` (the loop may stop early or call back once less), so a run of such blocks lands on the bar's total.

    >>> import io
    >>> bar = tqdm(total=3, file=io.StringIO())
    >>> with step_ticks(bar, 3) as tick:
    ...     for _ in range(5):
    ...         tick()
    >>> bar.n
    3
    >>> bar.close()
    """
    done = 0

    def tick() -> None:
        nonlocal done
        if done < steps:
            done += 1
            bar.update(1)

    yield tick
    if done < steps:
        bar.update(steps - done)
