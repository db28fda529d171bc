"""Progress bars on stderr for long work (training, attack cascades)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; redrawn at most every 10 s when stderr is not a terminal (log files, CI)."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=0.1 if interactive else 10.0, dynamic_ncols=interactive, **kwargs)
