"""``advbench list`` is generated from the registries: whatever is registered is listed, with its task."""

from __future__ import annotations

import pytest

from advbench.errors import ConfigError
from advbench.listing import LISTINGS, listing_rows


@pytest.mark.parametrize("kind", sorted(LISTINGS))
def test_every_registered_entry_is_listed_once(kind) -> None:
    rows = listing_rows(kind)
    expected = sum(len(listing.entries()) for listing in LISTINGS[kind])
    assert len(rows) == expected > 0
    assert len({(row["name"], row["task"]) for row in rows}) == len(rows)


def test_a_newly_registered_attack_is_listed_without_touching_the_listing(monkeypatch) -> None:
    from advbench.attack import ATTACKS
    from advbench.attacks.pgd import FGSM

    class Tiny(FGSM):
        """A one-line description that the listing shows."""

    monkeypatch.setitem(ATTACKS._entries, "tiny-test-attack", Tiny)
    monkeypatch.setitem(ATTACKS._tasks, "tiny-test-attack", Tiny.task)
    row = next(r for r in listing_rows("attacks") if r["name"] == "tiny-test-attack")
    assert row["task"] == "classification" and row["description"] == "A one-line description that the listing shows"


def test_aliases_filter_by_task_and_unknown_kinds_are_refused() -> None:
    assert {r["task"] for r in listing_rows("patch-attacks")} == {"detection"}
    assert {r["name"] for r in listing_rows("detectors")} == {"fcos-mnv3", "fasterrcnn-mnv3"}
    with pytest.raises(ConfigError, match="cannot list 'widgets'"):
        listing_rows("widgets")


def test_one_registry_per_idea_lists_every_task() -> None:
    """Models and data sets of every task come from one registry each, and each row names its task."""
    from advbench.task_names import SOD, TASKS

    for kind, expected in (("models", set(TASKS)), ("datasets", set(TASKS)), ("attacks", set(TASKS) - {SOD})):
        assert {row["task"] for row in listing_rows(kind)} == expected, kind  # SOD runs the classifier attacks
    assert {row["name"] for row in listing_rows("datasets") if row["task"] == "salient-object detection"} == {
        "eorssd", "synthetic-sod"}
