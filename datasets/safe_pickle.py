"""A restricted unpickler for data files that should hold nothing but numpy arrays and plain containers.

``pickle.load`` on an untrusted file can run arbitrary code, because a pickle may name any Python
global (``os.system``, ``builtins.exec`` ...) and call it.  :class:`RestrictedUnpickler` resolves only
the handful of globals numpy needs to rebuild arrays, dtypes and scalars (plus a latin-1-only
``_codecs.encode`` that Python 3 uses for ``bytes`` in protocol-2 pickles) and refuses everything
else with :class:`~advbench.errors.DatasetError` *before* anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from advbench.errors import DatasetError


def _latin1_encode(obj: object, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` that only performs the latin-1 encoding pickle itself uses."""
    if encoding.lower().replace("-", "").replace("_", "") not in {"latin1", "iso88591"} or not isinstance(obj, str):
        raise DatasetError(
            f"pickle asked for _codecs.encode({type(obj).__name__}, {encoding!r}); only latin-1 is allowed"
        )
    return obj.encode("latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a numpy array pickle may reference, under both numpy 1.x and 2.x module names."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes, scalars and builtin containers.

    ``source`` names the file in error messages.  Byte strings written by Python 2 come back as
    ``bytes`` (``encoding="bytes"``), as the CIFAR-10 python batches require.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only if it is on the numpy allow-list; otherwise raise DatasetError."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to load '{self.source}': it references the Python global '{module}.{name}', but this "
                "file should only hold numpy arrays, lists and bytes; it may have been tampered with, so replace "
                "it with a fresh copy from the original source"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids are never legitimate in these files."""
        raise DatasetError(f"refusing to load '{self.source}': it uses pickle persistent ids; replace the file")


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`, turning every failure into DatasetError naming it."""
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, source=str(path)).load()
    except DatasetError:
        raise
    except FileNotFoundError as exc:
        raise DatasetError(f"file '{path}' is missing") from exc
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        raise DatasetError(f"'{path}' is not a readable pickle file ({type(exc).__name__}: {exc}); replace it") from exc
