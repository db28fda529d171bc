"""A generic name → object registry used for everything pluggable.

Modelled on timm's ``register_model`` / ``list_models``: entries are added with a decorator,
looked up by name, and listed with optional shell-style wildcard filters.

>>> reg = Registry("colour")
>>> @reg.register("red")
... def make_red():
...     return "#f00"
>>> reg.get("red")()
'#f00'
>>> reg.names("r*")
['red']
>>> reg.get("blue")
Traceback (most recent call last):
...
advbench.errors.UnknownNameError: unknown colour 'blue'; known colours: red
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from advbench.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    Registering a name twice raises :class:`DuplicateNameError`; looking up an unknown name raises
    :class:`UnknownNameError` whose message lists every known name.

    One registry holds one idea for every task: an entry may say which task it serves (``task=``, one of
    :data:`advbench.task_names.TASKS`), and a lookup or listing for one task sees only that task's entries.

    >>> reg = Registry("set")
    >>> _ = reg.register("toy", task="classification")(len)
    >>> _ = reg.register("masks", task="detection")(len)
    >>> reg.names(task="classification"), reg.task_of("masks")
    (['toy'], 'detection')
    >>> reg.get("masks", task="classification")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    advbench.errors.UnknownNameError: 'masks' is a detection set, not a classification one; known ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._tasks: dict[str, str] = {}

    def register(self, name: str | None = None, *, task: str | None = None) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` (default: the target's ``__name__``), serving
        ``task`` when given."""

        def decorate(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise DuplicateNameError(f"cannot register an unnamed {self.kind}; pass name=...")
            self.add(key, obj, task=task)
            return obj

        return decorate

    def add(self, name: str, obj: T, *, task: str | None = None) -> None:
        """Register ``obj`` under ``name`` (serving ``task`` when given)."""
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind} '{name}' is already registered (by {self._entries[name]!r}); pick another name"
            )
        self._entries[name] = obj
        if task is not None:
            self._tasks[name] = task

    def task_of(self, name: str) -> str | None:
        """The task the entry ``name`` serves (None when it was registered without one)."""
        self.get(name)
        return self._tasks.get(name)

    def get(self, name: str, *, task: str | None = None) -> T:
        """Return the entry called ``name`` or raise an error that lists the known names (of ``task`` only,
        when given; an entry of another task is refused with the task it serves)."""
        label = self.kind if task is None else f"{task} {self.kind}"
        known = ", ".join(self.names(task=task)) or "(none registered)"
        if name not in self._entries:
            raise UnknownNameError(f"unknown {label} '{name}'; known {label}s: {known}")
        if task is not None and self._tasks.get(name) != task:
            raise UnknownNameError(f"'{name}' is a {self._tasks.get(name) or 'task-less'} {self.kind}, not a {task} "
                                   f"one; known {label}s: {known}")
        return self._entries[name]

    def names(self, pattern: str | None = None, *, task: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a wildcard pattern such as ``'pgd*'`` and by ``task``."""
        keys = sorted(self._entries)
        return [k for k in keys if (pattern is None or fnmatch.fnmatchcase(k, pattern))
                and (task is None or self._tasks.get(k) == task)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def split_scheme(spec: str, registry: Registry, example: str, task: str | None = None) -> tuple[str, str]:
    """``"scheme:argument"`` -> ``("scheme", "argument")`` with the scheme looked up in ``registry`` (unknown
    ones raise :class:`UnknownNameError` listing the known ones).  ``example`` shows a valid spec in the error
    for an empty or non-string spec.

    >>> r = Registry("data set"); _ = r.register("toy")(len)
    >>> split_scheme("Toy:n=3", r, "toy:n=3")
    ('toy', 'n=3')
    """
    from advbench.errors import DatasetError

    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"{registry.kind} spec must be a non-empty string such as {example}, got {spec!r}")
    scheme, _, arg = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    registry.get(scheme, task=task)
    return scheme, arg.strip()


def load_from_spec(spec: str, registry: Registry, example: str, *, seed: int, task: str | None = None) -> Any:
    """Call the loader that ``registry`` holds for ``spec``'s scheme as ``loader(argument, seed=seed)``;
    ``seed`` must be an int (bad specs fail as in :func:`split_scheme`)."""
    from advbench.errors import DatasetError

    try:
        seed = operator.index(seed)
    except TypeError:
        raise DatasetError(f"seed must be an int, got {type(seed).__name__} {seed!r}") from None
    scheme, arg = split_scheme(spec, registry, example, task)
    return registry.get(scheme)(arg, seed=seed)
