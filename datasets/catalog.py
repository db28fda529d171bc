"""The one data set registry, :data:`DATASETS`, and the classification front door :func:`load_dataset`.

Every task's loaders register here with the task they serve (:mod:`advbench.task_names`): the classification
schemes below, the SOD (:mod:`advbench.datasets.sod`), multi-task (:mod:`advbench.datasets.multitask`) and
detection (:mod:`advbench.datasets.detection`) ones.  A spec is ``"scheme"`` or ``"scheme:argument"``; the
scheme picks a loader of the right task and the argument (a path or an option list, depending on the loader)
is passed to it verbatim.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, Protocol

from advbench.datasets.data import ClassificationData
from advbench.errors import DatasetError
from advbench.registry import Registry
from advbench.task_names import CLASSIFICATION


class DatasetLoader(Protocol):
    """A loader: ``loader(argument, seed=...)`` returns a :class:`ClassificationData`."""

    def __call__(self, arg: str | None, *, seed: int) -> ClassificationData: ...


#: Scheme name -> loader, for every task.  Register a classification scheme with
#: ``@DATASETS.register("name", task=CLASSIFICATION)``; other tasks' loaders say their own task.
DATASETS: Registry[Any] = Registry("data set")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"scheme:argument"`` into ``(scheme, argument)``; the argument is ``None`` without a colon."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(
            f"data set spec must be a non-empty string such as 'digits' or 'cifar10:/path', got {spec!r}"
        )
    scheme, sep, arg = spec.strip().partition(":")
    return scheme.strip().lower(), (arg if sep else None)


def load_dataset(spec: str, *, seed: int = 0) -> ClassificationData:
    """Load the data set described by ``spec`` (e.g. ``"digits"``, ``"cifar10:/data/cifar-10-batches-py"``).

    ``seed`` fixes every random choice (train/test split, synthetic samples).  Results are cached
    in-process on ``(spec, seed)``, so repeated calls return the *same* object: do not modify its
    tensors in place.  Unknown schemes raise :class:`~advbench.errors.UnknownNameError` listing the
    known ones; bad paths and options raise :class:`~advbench.errors.MissingPathError` or
    :class:`~advbench.errors.DatasetError`.
    """
    try:
        seed = operator.index(seed)
    except TypeError:
        raise DatasetError(f"seed must be an int, got {type(seed).__name__} {seed!r}") from None
    scheme, _ = parse_spec(spec)
    DATASETS.get(scheme, task=CLASSIFICATION)  # fail fast with the list of known names
    return _load_cached(spec.strip(), seed)


@functools.lru_cache(maxsize=32)
def _load_cached(spec: str, seed: int) -> ClassificationData:
    scheme, arg = parse_spec(spec)
    data = DATASETS.get(scheme)(arg, seed=seed)
    return data if data.name == spec else dataclasses.replace(data, name=spec)


def clear_cache() -> None:
    """Forget every cached data set (e.g. after the files behind a path spec changed)."""
    _load_cached.cache_clear()


def list_datasets(task: str | None = CLASSIFICATION) -> list[str]:
    """Sorted names of the registered data set schemes of ``task`` (None: every task)."""
    return DATASETS.names(task=task)


def reject_argument(scheme: str, arg: str | None) -> None:
    """Raise :class:`DatasetError` if a loader that takes no argument was given one."""
    if arg is not None:
        raise DatasetError(f"data set '{scheme}' takes no argument; use '{scheme}' instead of '{scheme}:{arg}'")
