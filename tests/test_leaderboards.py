"""Tests of advbench.leaderboards: entry schema, merging runs, deterministic build, Markdown and HTML
rendering, and the HTML page in a real headless Chromium (skipped when Chromium is not installed)."""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from advbench.errors import ConfigError, MissingPathError, StoreError
from advbench.leaderboards import (
    LeaderboardEntry,
    build_leaderboard,
    entries_from_runs,
    entry_id,
    load_entries,
    render,
    render_html,
    render_markdown,
)
from advbench.store import ResultsStore

SHA_WIDE, SHA_SMALL, SHA_PRUNED = "aa" * 32, "bb" * 32, "cc" * 32
JPEG = {"name": "jpeg", "params": {"quality": 60}, "differentiable": False, "bpda": True}


def _hash(tag: str) -> str:
    return (tag * 64)[:64]


def make_run(config_hash: str, *, name: str, sha: str | None, curve: list[tuple[float, float]], clean: float,
             attacks: list[str], n: int = 100, norm: str = "linf", created: str = "2024-01-01T00:00:00+00:00",
             parent: str | None = None, ratio: float | None = None, status: str = "finished",
             defense: dict | None = None, selection_seed: int = 0) -> dict:
    """A run record shaped like advbench.runner's (several eps: a curve; one eps: a top-level eps)."""
    model = {"name": name, "path": f"/ckpt/{name}.safetensors"}
    if sha is not None:
        model["sha256"] = sha
    if parent is not None:
        model["parent_sha256"], model["compression_ratio"] = parent, ratio
    metrics = {"n": n, "norm": norm, "clean_accuracy": clean, "robust_accuracy": curve[-1][1],
               "attack_success_rate": 1 - curve[-1][1] / clean}
    if len(curve) == 1:
        metrics["eps"] = curve[0][0]
    else:
        metrics["curve"] = [{"eps": e, "robust_accuracy": a, "attack_success_rate": 1 - a / clean} for e, a in curve]
    config = {"model": model, "dataset": "digits", "norm": norm, "eps": [e for e, _ in curve],
              "data": {"spec": "digits", "fingerprint": "f" * 64,
                       "selection": {"method": "balanced", "seed": selection_seed, "n": n}},
              "split": "test", "split_seed": 0,
              "attacks": [{"name": a, "steps": 10} for a in attacks], "n_samples": n, "seed": 0}
    if defense is not None:
        config["defense"] = dict(defense)
        metrics["defense"] = {**defense, "clean_accuracy_undefended": 0.99}
    return {
        "config_hash": config_hash,
        "config": config,
        "code_version": "0.1.0+gittest",
        "metrics": metrics,
        "cost": {"gradients": 1, "queries": 1, "wall_time_s": 0.1},
        "status": status,
        "created_at": created,
    }


def demo_runs() -> list[dict]:
    """wide_cnn evaluated several ways (two FGSM+PGD runs on one sample set, one on a smaller sample set,
    an APGD-CE+Square run, a JPEG-defended run), a compressed child, a second dense model, a named model
    measured only at eps 0.031 and one under L2, and a failed run and a min-max run that must be skipped."""
    wide_1 = make_run(_hash("1"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.8), (0.1, 0.5), (0.2, 0.1)],
                      clean=0.95, attacks=["fgsm", "pgd"], created="2024-01-01T00:00:00+00:00")
    wide_2 = make_run(_hash("2"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.1, 0.45), (0.2, 0.15)],
                      clean=0.95, attacks=["fgsm", "pgd"], created="2024-02-01T00:00:00+00:00")
    wide_few = make_run(_hash("a"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.1, 0.2)], clean=0.99,
                        attacks=["fgsm", "pgd"], n=50, created="2024-03-01T00:00:00+00:00")
    wide_apgd = make_run(_hash("b"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.1, 0.35), (0.2, 0.05)], clean=0.95,
                         attacks=["apgd-ce", "square"], created="2024-02-02T00:00:00+00:00")
    wide_jpeg = make_run(_hash("c"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.1, 0.7), (0.2, 0.5)], clean=0.93,
                         attacks=["fgsm", "pgd"], defense=JPEG, created="2024-02-03T00:00:00+00:00")
    small = make_run(_hash("3"), name="small_cnn", sha=SHA_SMALL, curve=[(0.05, 0.7), (0.1, 0.4), (0.2, 0.2)],
                     clean=0.9, attacks=["fgsm", "pgd"], n=20)
    pruned = make_run(_hash("4"), name="wide_cnn-pruned", sha=SHA_PRUNED, curve=[(0.05, 0.75), (0.1, 0.6), (0.2, 0.3)],
                      clean=0.93, attacks=["fgsm", "pgd"], parent=SHA_WIDE, ratio=4.0)
    tiny_eps = make_run(_hash("d"), name="fresh_cnn", sha=None, curve=[(0.031, 0.9)], clean=0.92, attacks=["pgd"])
    named = make_run(_hash("5"), name="fresh_cnn", sha=None, curve=[(0.5, 0.4)], clean=0.6, attacks=["pgd"], norm="l2")
    failed = make_run(_hash("6"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.0), (0.2, 0.0)], clean=0.95,
                      attacks=["fgsm", "pgd"], status="failed", created="2024-03-01T00:00:00+00:00")
    minmax = make_run(_hash("7"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.0), (0.2, 0.0)], clean=0.95,
                      attacks=["msd"], created="2024-03-02T00:00:00+00:00")
    minmax["config"]["models"] = [minmax["config"]["model"]]
    minmax["metrics"] = {"n": 100, "attack": "msd", "asr_all": 0.9, "clean_accuracy": 0.95, "eps": 0.2}
    return [wide_1, wide_2, wide_few, wide_apgd, wide_jpeg, small, pruned, tiny_eps, named, failed, minmax]


def write_store(path: Path, runs: list[dict]) -> Path:
    with ResultsStore(path) as store:
        for run in runs:
            store.write_run(copy.deepcopy(run))
    return path


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return write_store(tmp_path / "results.db", demo_runs())


@pytest.fixture
def entries(store_path: Path, tmp_path: Path) -> list[LeaderboardEntry]:
    build_leaderboard(store_path, tmp_path / "entries")
    return load_entries(tmp_path / "entries")


def find(entries: list[LeaderboardEntry], model: str, eps: float, *, attacks: str = "fgsm+pgd",
         defense: str = "none") -> LeaderboardEntry:
    (match,) = [e for e in entries if e.model == model and e.eps == eps and e.suite == attacks
                and e.defense_label == defense]
    return match


def valid_entry_dict() -> dict:
    return {
        "model": "cnn", "model_sha256": SHA_SMALL, "dataset": "digits", "norm": "linf", "eps": 0.1,
        "attacks": ["pgd"], "defense": None, "clean_accuracy": 0.9, "robust_accuracy": 0.4,
        "attack_success_rate": 0.5, "n_samples": 100, "sample_set": "0123456789abcdef",
        "config_hash": _hash("1"), "code_version": "0.1.0", "date": "2024-01-01T00:00:00+00:00",
    }


# ---------------------------------------------------------------------------------------------- schema
def test_valid_entry_round_trips_through_json():
    entry = LeaderboardEntry.model_validate(valid_entry_dict())
    assert LeaderboardEntry.model_validate_json(entry.model_dump_json()) == entry
    assert entry.schema_version == 2
    assert entry.key == ("digits", "linf", 0.1, SHA_SMALL, "none", "pgd")
    defended = LeaderboardEntry.model_validate({**valid_entry_dict(), "defense": JPEG})
    assert defended.key != entry.key and defended.defense_label == "jpeg:quality=60"
    assert LeaderboardEntry.model_validate_json(defended.model_dump_json()) == defended


@pytest.mark.parametrize("field", ["clean_accuracy", "robust_accuracy", "eps", "n_samples"])
def test_string_in_numeric_field_fails_naming_the_field(field: str):
    data = valid_entry_dict()
    data[field] = str(data[field])
    with pytest.raises(ValidationError) as info:
        LeaderboardEntry.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]
    assert field in str(info.value)
    with pytest.raises(ValidationError):  # the same from JSON text
        LeaderboardEntry.model_validate_json(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clean_accuracy": 1.2}, "clean_accuracy"),
        ({"robust_accuracy": -0.1}, "robust_accuracy"),
        ({"eps": -0.1}, "eps"),
        ({"clean_accuracy": float("nan")}, "clean_accuracy"),
        ({"n_samples": 0}, "n_samples"),
        ({"clean_accuracy": True}, "clean_accuracy"),
        ({"norm": "l3"}, "unknown norm"),
        ({"date": "yesterday"}, "ISO 8601"),
        ({"model_sha256": "xyz"}, "model_sha256"),
        ({"compression_ratio": 4.0}, "parent_sha256"),
        ({"attacks": []}, "attacks"),
        ({"attacks": [""]}, "attack names"),
        ({"sample_set": ""}, "sample_set"),
        ({"config_hash": ""}, "config_hash"),
        ({"defense": {"params": {}}}, "defense.name"),
        ({"schema_version": 1}, "schema_version"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_schema_rejects_bad_values(change: dict, message: str):
    data = valid_entry_dict()
    data.update(change)
    with pytest.raises(ValidationError, match=re.escape(message)):
        LeaderboardEntry.model_validate(data)


# ---------------------------------------------------------------------------------------------- issue 18: identity
def test_a_defended_run_is_its_own_entry_and_says_so(entries: list[LeaderboardEntry], tmp_path: Path):
    """Before: the JPEG+BPDA numbers landed on the bare model's row and the entry never named the defense."""
    bare = find(entries, "wide_cnn", 0.1)
    jpeg = find(entries, "wide_cnn", 0.1, defense="jpeg:quality=60")
    assert (bare.defense, bare.robust_accuracy, bare.clean_accuracy) == (None, 0.45, 0.95)
    assert jpeg.defense is not None and jpeg.defense.model_dump() == JPEG
    assert (jpeg.robust_accuracy, jpeg.clean_accuracy, jpeg.config_hash) == (0.7, 0.93, _hash("c"))
    assert bare.config_hash not in {_hash("c")} and bare.key != jpeg.key
    files = {p.name: json.loads(p.read_text()) for p in (tmp_path / "entries").glob("*.json")}
    defended = [d for d in files.values() if d["defense"] is not None]
    assert defended and all(d["defense"] == JPEG for d in defended)
    assert {name for name, d in files.items() if d["defense"]} == {
        n for n in files if "__jpeg__" in n}


def test_clean_and_robust_accuracy_come_from_one_run_and_sample_set():
    """Before: clean accuracy came from an n=100 run and robust accuracy from an n=50 run."""
    big = make_run(_hash("1"), name="cnn", sha=SHA_SMALL, curve=[(0.1, 0.5)], clean=0.9, attacks=["pgd"], n=100)
    few = make_run(_hash("2"), name="cnn", sha=SHA_SMALL, curve=[(0.1, 0.3)], clean=0.96, attacks=["pgd"], n=50,
                   created="2024-05-01T00:00:00+00:00")
    (entry,) = entries_from_runs([big, few])
    assert (entry.clean_accuracy, entry.robust_accuracy, entry.n_samples) == (0.9, 0.5, 100)
    assert entry.config_hash == _hash("1")
    stronger = make_run(_hash("3"), name="cnn", sha=SHA_SMALL, curve=[(0.1, 0.4)], clean=0.9, attacks=["pgd"],
                        n=100, created="2023-01-01T00:00:00+00:00")
    (entry,) = entries_from_runs([big, few, stronger])  # same sample set: the strongest run, all numbers from it
    assert (entry.clean_accuracy, entry.robust_accuracy, entry.config_hash) == (0.9, 0.4, _hash("3"))
    other_set = make_run(_hash("4"), name="cnn", sha=SHA_SMALL, curve=[(0.1, 0.1)], clean=0.97, attacks=["pgd"],
                         n=100, selection_seed=7, created="2022-01-01T00:00:00+00:00")
    (entry,) = entries_from_runs([big, stronger, other_set])  # a tie on n: the newest sample set, not a mix
    assert (entry.clean_accuracy, entry.robust_accuracy, entry.config_hash) == (0.9, 0.4, _hash("3"))


def test_entries_at_different_eps_are_never_ranked_together():
    """Before: a model measured at eps 0.031 was ranked first, above models measured at eps 0.1."""
    runs = [make_run(_hash("1"), name="easy", sha=None, curve=[(0.031, 0.9)], clean=0.95, attacks=["pgd"]),
            make_run(_hash("2"), name="hard_a", sha=None, curve=[(0.1, 0.4)], clean=0.95, attacks=["pgd"]),
            make_run(_hash("3"), name="hard_b", sha=None, curve=[(0.1, 0.5)], clean=0.95, attacks=["pgd"])]
    entries = entries_from_runs(runs)
    assert {e.eps for e in entries} == {0.031, 0.1}
    tables = _markdown_tables(render_markdown(entries))
    assert {title: [(c[0], c[1]) for c in rows] for title, rows in tables.items()} == {
        "digits · L∞ · ε = 0.031": [("1", "easy")],
        "digits · L∞ · ε = 0.1": [("1", "hard_b"), ("2", "hard_a")],
    }
    html_tables = parse_page(render_html(entries)).tables
    assert {k: [r["data-model"] for f in v for r in f] for k, v in html_tables.items()} == {
        "table-digits-linf-eps-0.031": ["easy"], "table-digits-linf-eps-0.1": ["hard_b", "hard_a"]}


def test_attack_suites_are_separate_entries(entries: list[LeaderboardEntry]):
    pgd = find(entries, "wide_cnn", 0.2)
    apgd = find(entries, "wide_cnn", 0.2, attacks="apgd-ce+square")
    assert (pgd.robust_accuracy, apgd.robust_accuracy) == (0.1, 0.05)
    assert pgd.attacks == ["fgsm", "pgd"] and apgd.attacks == ["apgd-ce", "square"]


# ---------------------------------------------------------------------------------------------- collect
def test_runs_with_one_identity_keep_the_strongest_run_per_eps(entries: list[LeaderboardEntry]):
    assert [(e.eps, e.robust_accuracy, e.config_hash) for e in entries
            if e.model == "wide_cnn" and e.suite == "fgsm+pgd" and e.defense is None] == [
        (0.05, 0.8, _hash("1")), (0.1, 0.45, _hash("2")), (0.2, 0.1, _hash("1"))]
    wide = find(entries, "wide_cnn", 0.1)
    assert wide.n_samples == 100 and wide.clean_accuracy == 0.95  # not the n=50 run's 0.99 / 0.2
    assert wide.date == "2024-02-01T00:00:00+00:00" and wide.code_version == "0.1.0+gittest"
    assert wide.attack_success_rate == round(1 - 0.45 / 0.95, 6)
    assert wide.model_sha256 == SHA_WIDE and wide.parent_sha256 is None and wide.compression_ratio is None


def test_failed_and_minmax_runs_are_skipped(entries: list[LeaderboardEntry]):
    used = {e.config_hash for e in entries}
    assert used == {_hash(t) for t in "12bc345d"}
    assert len({e.key for e in entries}) == len(entries) == 15


def test_compressed_child_and_single_eps_entries(entries: list[LeaderboardEntry]):
    pruned = find(entries, "wide_cnn-pruned", 0.2)
    assert (pruned.parent_sha256, pruned.compression_ratio, pruned.robust_accuracy) == (SHA_WIDE, 4.0, 0.3)
    (fresh,) = [e for e in entries if e.norm == "l2"]
    assert fresh.model_sha256 is None and (fresh.eps, fresh.robust_accuracy, fresh.n_samples) == (0.5, 0.4, 100)


def test_a_run_that_breaks_the_schema_is_a_store_error_naming_it(tmp_path: Path):
    bad = make_run(_hash("9"), name="broken", sha=_hash("d"), curve=[(0.1, 1.5), (0.2, 1.2)], clean=1.0,
                   attacks=["pgd"])
    with pytest.raises(StoreError, match=r"99999999.*robust_accuracy"):
        build_leaderboard(write_store(tmp_path / "r.db", [bad]), tmp_path / "out")


# ---------------------------------------------------------------------------------------------- build / load
def test_build_writes_one_valid_json_file_per_entry(store_path: Path, tmp_path: Path):
    paths = build_leaderboard(store_path, tmp_path / "entries")
    assert len(paths) == 15
    assert sorted(tmp_path.joinpath("entries").iterdir()) == sorted(paths)
    names = [p.name for p in paths]
    assert f"digits__linf__eps-0.1__wide_cnn__jpeg__fgsm-pgd__{entry_id(find(load_entries(tmp_path / 'entries'), 'wide_cnn', 0.1, defense='jpeg:quality=60'))}.json" in names  # noqa: E501
    assert any(n.startswith("digits__linf__eps-0.031__fresh_cnn__none__pgd__") for n in names)
    for path in paths:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert list(data) == sorted(data) and text.endswith("\n")
        assert isinstance(data["robust_accuracy"], float) and isinstance(data["n_samples"], int)
        assert data["schema_version"] == 2 and "defense" in data and "sample_set" in data
        LeaderboardEntry.model_validate(data)


def test_build_is_deterministic_whatever_the_insertion_order(store_path: Path, tmp_path: Path):
    first = build_leaderboard(store_path, tmp_path / "a")
    again = build_leaderboard(store_path, tmp_path / "a")
    other_store = write_store(tmp_path / "reversed.db", list(reversed(demo_runs())))
    second = build_leaderboard(other_store, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in again] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_rebuild_removes_stale_and_old_schema_entries_but_keeps_other_files(store_path: Path, tmp_path: Path):
    out = tmp_path / "entries"
    paths = build_leaderboard(store_path, out)
    stale = out / "digits__linf__eps-0.1__gone__none__pgd__000000000000.json"
    stale.write_text(paths[0].read_text())
    old_schema = out / "digits__linf__wide_cnn__aaaaaaaaaaaa.json"
    old_schema.write_text(json.dumps({"schema_version": 1, "config_hashes": [_hash("1")], "model": "wide_cnn"}))
    (out / "README.txt").write_text("keep me")
    build_leaderboard(store_path, out)
    assert not stale.exists() and not old_schema.exists() and (out / "README.txt").exists()


def test_an_old_schema_entry_is_refused_with_a_rebuild_hint(tmp_path: Path):
    folder = tmp_path / "entries"
    folder.mkdir()
    (folder / "old.json").write_text(json.dumps({"schema_version": 1, "model": "cnn", "config_hashes": ["x"]}))
    with pytest.raises(ConfigError, match=r"old\.json is a leaderboard entry of schema version 1.*leaderboard build"):
        load_entries(folder)


def test_build_missing_store_is_an_error(tmp_path: Path):
    with pytest.raises(MissingPathError, match="does not exist"):
        build_leaderboard(tmp_path / "nope.db", tmp_path / "out")
    assert not (tmp_path / "nope.db").exists()


def test_entry_files_follow_the_umask(store_path: Path, tmp_path: Path):
    """Before: entry files (written through a temporary file) were created 0600 whatever the umask."""
    for umask, expected in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"entries-{umask:o}"
            paths = build_leaderboard(store_path, out)
        finally:
            os.umask(old)
        assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {expected}


def test_load_entries_errors_name_the_file(entries: list[LeaderboardEntry], tmp_path: Path):
    folder = tmp_path / "entries"
    target = sorted(folder.glob("digits__linf__eps-0.1__small_cnn__*.json"))[0]
    data = json.loads(target.read_text())
    data["clean_accuracy"] = "0.9"
    target.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=re.escape(target.name) + r".*clean_accuracy: Input should be a valid number"):
        load_entries(folder)
    target.write_text('{"model": "cnn",')
    with pytest.raises(ConfigError, match=re.escape(target.name) + r" is not valid JSON \(line 1"):
        load_entries(folder)
    with pytest.raises(MissingPathError):
        load_entries(tmp_path / "missing")


def test_load_entries_rejects_two_files_for_one_entry(entries: list[LeaderboardEntry], tmp_path: Path):
    folder = tmp_path / "entries"
    source = sorted(folder.glob("digits__linf__eps-0.1__small_cnn__*.json"))[0]
    shutil.copy(source, folder / "copy.json")
    with pytest.raises(ConfigError, match="both hold model 'small_cnn'.*eps 0.1"):
        load_entries(folder)


# ---------------------------------------------------------------------------------------------- markdown
def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    tables = {}
    for block in text.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| #")]
        tables[title] = [[c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]] for row in rows]
    return tables


def test_markdown_has_one_table_per_eps_sorted_by_robust_accuracy(entries: list[LeaderboardEntry]):
    text = render_markdown(entries)
    assert text == render_markdown(list(reversed(entries)))
    tables = _markdown_tables(text)
    assert list(tables) == ["digits · L2 · ε = 0.5", "digits · L∞ · ε = 0.031", "digits · L∞ · ε = 0.05",
                            "digits · L∞ · ε = 0.1", "digits · L∞ · ε = 0.2"]
    rows = tables["digits · L∞ · ε = 0.1"]
    assert [(c[0], c[1], c[2], c[3], c[5]) for c in rows] == [
        ("1", "wide_cnn", "jpeg:quality=60 + BPDA", "fgsm, pgd", "70.0%"),
        ("2", "wide_cnn-pruned", "none", "fgsm, pgd", "60.0%"),
        ("3", "wide_cnn", "none", "fgsm, pgd", "45.0%"),
        ("4", "small_cnn", "none", "fgsm, pgd", "40.0%"),
        ("5", "wide_cnn", "none", "apgd-ce, square", "35.0%"),
    ]
    assert rows[1][7] == "wide_cnn (4.0×)" and rows[0][6] == "100" and rows[3][6] == "20"
    assert rows[2][9] == f"`{_hash('2')[:12]}`"
    assert "different attack suites" in text.split("## digits · L∞ · ε = 0.1")[1].split("## ")[0]
    assert "different attack suites" not in text.split("## digits · L∞ · ε = 0.031")[1].split("## ")[0]


# ---------------------------------------------------------------------------------------------- html
class _PageParser(HTMLParser):
    """Collects, per leaderboard table, the rows (attributes) grouped by <tbody>, and the SVG series."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.headers: dict[str, list[dict]] = {}
        self.series: list[dict] = []
        self.polylines = 0
        self.pareto_families: list[str] = []
        self.external: list[str] = []
        self._table: str | None = None
        self._svg: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "link", "iframe") and (a.get("src") or a.get("href")):
            self.external.append(f"{tag} {a}")
        if tag == "table" and "leaderboard" in (a.get("class") or ""):
            self._table = a["id"]
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "th" and self._table:
            self.headers[self._table].append(a)
        elif tag == "tbody" and self._table:
            self.tables[self._table].append([])
        elif tag == "tr" and self._table and self.tables[self._table]:
            self.tables[self._table][-1].append(a)
        elif tag == "g" and a.get("class") == "series":
            self.series.append(a)
        elif tag == "svg":
            self._svg = a.get("class")
        elif tag == "polyline" and self._svg == "curve":
            self.polylines += 1
        elif tag == "g" and a.get("class") == "family" and self._svg == "pareto":
            self.pareto_families.append(a["data-family"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None


def parse_page(text: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser


def test_html_is_a_pure_function_of_the_entries(entries: list[LeaderboardEntry]):
    page = render_html(entries)
    assert render_html(entries) == page
    assert render_html(list(reversed(entries))) == page
    assert render(entries, "html") == page and render(entries, "md") == render_markdown(entries)
    with pytest.raises(ConfigError, match="unknown leaderboard format"):
        render(entries, "pdf")


def test_html_is_self_contained(entries: list[LeaderboardEntry]):
    page = render_html(entries)
    parsed = parse_page(page)
    assert parsed.external == []
    without_svg_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_svg_ns and "https://" not in without_svg_ns and "url(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<script>") == 1 and "addEventListener(\"click\"" in page


T01 = "table-digits-linf-eps-0.1"


def test_html_tables_rows_and_children_follow_their_parent(entries: list[LeaderboardEntry]):
    parsed = parse_page(render_html(entries))
    assert list(parsed.tables) == ["table-digits-l2-eps-0.5", "table-digits-linf-eps-0.031",
                                   "table-digits-linf-eps-0.05", T01, "table-digits-linf-eps-0.2"]
    families = parsed.tables[T01]
    assert [[(r["data-model"], r["data-defense"], r["data-attacks"]) for r in family] for family in families] == [
        [("wide_cnn", "jpeg:quality=60", "fgsm+pgd")],
        [("wide_cnn", "none", "fgsm+pgd"), ("wide_cnn-pruned", "none", "fgsm+pgd")],  # the child under its parent
        [("small_cnn", "none", "fgsm+pgd")],
        [("wide_cnn", "none", "apgd-ce+square")],
    ]
    child = families[1][1]
    assert (child["data-depth"], child["data-parent-sha256"], child["class"], child["data-rank"]) == (
        "1", SHA_WIDE, "child", "2")
    assert all(r["data-eps"] == "0.1" for f in families for r in f)
    keys = [h["data-key"] for h in parsed.headers[T01]]
    assert keys == ["rank", "model", "defense", "attacks", "clean_accuracy", "robust_accuracy", "attack_success_rate",
                    "compression_ratio", "n_samples", "date", "run"]
    # one plot per (dataset, norm), one line per model x defense x suite x sample set
    linf = [s for s in parsed.series if s["data-attacks"] != "pgd" or s["data-model"] != "fresh_cnn"]
    assert len(parsed.series) == 7 and parsed.polylines == 7 and len(linf) == 5
    page = render_html(entries)
    assert "↳" in page and "4.0×" in page


def test_html_with_an_orphan_child_and_no_entries(entries: list[LeaderboardEntry]):
    orphan_only = [e for e in entries if e.model != "wide_cnn"]
    families = parse_page(render_html(orphan_only)).tables[T01]
    assert [[r["data-model"] for r in f] for f in families] == [["wide_cnn-pruned"], ["small_cnn"]]
    assert families[0][0]["data-depth"] == "0"
    assert "No entries." in render_html([]) and "No entries." in render_markdown([])


# ---------------------------------------------------------------------------------------------- browser
def find_chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


BROWSER_PROBE = """
<script>
window.addEventListener("load", function () {
  var out = {};
  try {
    var text = function (el) { return el ? el.innerText.trim() : null; };
    out.tables = {};
    Array.prototype.forEach.call(document.querySelectorAll("table.leaderboard"), function (table) {
      var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
        return th.getAttribute("data-key");
      });
      out.tables[table.id] = {
        heading: text(table.closest("section.board").querySelector("h3")),
        rows: Array.prototype.map.call(table.querySelectorAll("tbody tr"), function (r) {
          var cell = function (key) { return text(r.cells[heads.indexOf(key)]); };
          return {model: r.getAttribute("data-model"), eps: r.getAttribute("data-eps"),
                  rank: cell("rank"), defense: cell("defense"), attacks: cell("attacks"),
                  robust: cell("robust_accuracy"), clean: cell("clean_accuracy"), n: cell("n_samples"),
                  visible: r.getBoundingClientRect().height > 0};
        })
      };
    });
    var table = document.getElementById("table-digits-linf-eps-0.1");
    var order = function () {
      return Array.prototype.map.call(table.querySelectorAll("tbody tr"), function (r) {
        return [r.getAttribute("data-model"), r.getAttribute("data-defense"), r.getAttribute("data-attacks")].join("/");
      });
    };
    var click = function (key) {
      var th = table.querySelector('th[data-key="' + key + '"]');
      th.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
      return order().concat([th.getAttribute("aria-sort")]);
    };
    out.robust_1 = click("robust_accuracy");
    out.defense_1 = click("defense");
    out.n_1 = click("n_samples");
    out.polylines = document.querySelectorAll("svg.curve polyline").length;
    out.polyline_width = Math.max.apply(null, Array.prototype.map.call(
      document.querySelectorAll("#digits-linf svg.curve polyline"), function (p) { return p.getBBox().width; }));
  } catch (err) {
    out.error = String(err);
  }
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def run_probe(page: str, tmp_path: Path) -> dict:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    probe_page = tmp_path / "leaderboard-probe.html"
    probe_page.write_text(page.replace("</body>", BROWSER_PROBE + "</body>"), encoding="utf-8")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", probe_page.as_uri(),
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"headless chromium did not finish in 120 s: {exc}")
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe result in the dumped DOM (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    result = json.loads(html.unescape(match.group(1)))
    assert "error" not in result, result
    return result


def test_html_in_headless_chromium_separates_defenses_and_eps(tmp_path: Path):
    """Issue 18: a defended run, an undefended run and two eps in a real store, rendered in a real browser."""
    runs = [
        make_run(_hash("1"), name="cnn", sha=SHA_WIDE, curve=[(0.031, 0.8), (0.1, 0.3)], clean=0.95,
                 attacks=["pgd"], created="2024-01-01T00:00:00+00:00"),
        make_run(_hash("2"), name="cnn", sha=SHA_WIDE, curve=[(0.1, 0.6)], clean=0.9, attacks=["pgd"],
                 defense=JPEG, created="2024-01-02T00:00:00+00:00"),
        make_run(_hash("3"), name="other", sha=SHA_SMALL, curve=[(0.031, 0.5)], clean=0.93, attacks=["pgd"]),
        make_run(_hash("4"), name="cnn", sha=SHA_WIDE, curve=[(0.1, 0.1)], clean=0.99, attacks=["pgd"], n=50,
                 created="2024-01-03T00:00:00+00:00"),
    ]
    store = write_store(tmp_path / "results.db", runs)
    build_leaderboard(store, tmp_path / "entries")
    result = run_probe(render_html(load_entries(tmp_path / "entries")), tmp_path)
    tables = result["tables"]
    assert list(tables) == ["table-digits-linf-eps-0.031", "table-digits-linf-eps-0.1"]
    low, high = tables["table-digits-linf-eps-0.031"], tables["table-digits-linf-eps-0.1"]
    assert low["heading"] == "digits · L∞ · ε = 0.031" and high["heading"] == "digits · L∞ · ε = 0.1"
    # each table holds only its eps, ranked from 1 on its own
    assert [(r["rank"], r["model"], r["eps"], r["robust"]) for r in low["rows"]] == [
        ("1", "cnn", "0.031", "80.0%"), ("2", "other", "0.031", "50.0%")]
    assert [(r["rank"], r["model"], r["defense"], r["robust"], r["clean"], r["n"]) for r in high["rows"]] == [
        ("1", "cnn", "jpeg:quality=60 + BPDA", "60.0%", "90.0%", "100"),  # the defended entry says so
        ("2", "cnn", "none", "30.0%", "95.0%", "100"),  # the bare model keeps its own numbers (not the n=50 run)
    ]
    assert all(r["visible"] and r["attacks"] == "pgd" for t in tables.values() for r in t["rows"])
    cnn_bare, cnn_jpeg = "cnn/none/pgd", "cnn/jpeg:quality=60/pgd"
    assert result["robust_1"] == [cnn_bare, cnn_jpeg, "ascending"]
    assert result["defense_1"] == [cnn_jpeg, cnn_bare, "ascending"]
    assert result["polylines"] == 3 and result["polyline_width"] > 100


def test_html_in_headless_chromium_sorts_on_header_click(entries: list[LeaderboardEntry], tmp_path: Path):
    result = run_probe(render_html(entries), tmp_path)
    jpeg, wide, pruned = "wide_cnn/jpeg:quality=60/fgsm+pgd", "wide_cnn/none/fgsm+pgd", "wide_cnn-pruned/none/fgsm+pgd"
    small, apgd = "small_cnn/none/fgsm+pgd", "wide_cnn/none/apgd-ce+square"
    # robust starts sorted descending, so the first click sorts ascending (by the head row's value)
    assert result["robust_1"] == [apgd, small, wide, pruned, jpeg, "ascending"]
    # text sorts ascending first; ties keep the rank order
    assert result["defense_1"] == [jpeg, wide, pruned, small, apgd, "ascending"]
    # numeric, not lexicographic: n = 100 beats n = 20
    assert result["n_1"] == [jpeg, wide, pruned, apgd, small, "descending"]
    assert set(result["tables"]) == {"table-digits-l2-eps-0.5", "table-digits-linf-eps-0.031",
                                     "table-digits-linf-eps-0.05", T01, "table-digits-linf-eps-0.2"}
    assert result["polylines"] == 7 and result["polyline_width"] > 100


# ---------------------------------------------------------------------------------------------- docs
@pytest.mark.parametrize("name", ["advbench.leaderboards.schema", "advbench.leaderboards.storage"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_example_entries_in_the_repo_are_valid_and_rendered():
    """examples/leaderboard holds entries built from a real `advbench demo` store and their renderings."""
    folder = Path(__file__).resolve().parents[1] / "examples" / "leaderboard"
    if not folder.is_dir():
        pytest.skip("examples/leaderboard is not in this checkout")
    entries = load_entries(folder / "entries")
    assert entries and any(e.parent_sha256 for e in entries)
    assert (folder / "leaderboard.md").read_text(encoding="utf-8") == render_markdown(entries)
    assert (folder / "leaderboard.html").read_text(encoding="utf-8") == render_html(entries)


def test_compressed_entries_are_grouped_by_family_with_a_pareto_plot(entries: list[LeaderboardEntry]):
    """Two children of one parent, of two compression families: under the parent they are grouped by family,
    and each (dataset, norm) with compressed entries gets a robust-accuracy-vs-compression plot per family."""
    from advbench.leaderboards.svg_plot import pareto_points

    children = [e for e in entries if e.parent_sha256]
    assert children
    relabelled = [e.model_copy(update={"compression_family": "magnitude unstructured"}) if e.parent_sha256 else e
                  for e in entries]
    sibling = [c.model_copy(update={"model": "wide_cnn-nm", "model_sha256": "b" * 64, "compression_ratio": 2.0,
                                    "compression_family": "admm nm 2:4", "robust_accuracy": 0.0})
               for c in children]
    page = render_html(relabelled + sibling)
    parsed = parse_page(page)
    assert sorted(set(parsed.pareto_families)) == ["admm nm 2:4", "dense", "magnitude unstructured"]
    family = next(f for f in parsed.tables[T01] if len(f) > 1)
    assert [r["data-model"] for r in family] == ["wide_cnn", "wide_cnn-nm", "wide_cnn-pruned"]  # by family name
    assert "4.0× · magnitude unstructured" in page
    from advbench.leaderboards.layout import sections

    section = next(s for s in sections(relabelled + sibling) if s.norm == "linf")
    points = pareto_points(section)
    assert points["dense"][0][0] == 1.0 and points["admm nm 2:4"][0][:2] == (2.0, 0.0)
    with pytest.raises(ValueError, match="compression_family is only meaningful"):
        entries[0].model_copy(update={"compression_family": "x", "parent_sha256": None}).model_validate(
            {**entries[0].model_dump(), "compression_family": "x", "parent_sha256": None})
