"""Tests of advbench.leaderboards: entry schema, merging runs, deterministic build, Markdown and HTML
rendering, and the HTML page in a real headless Chromium (skipped when Chromium is not installed)."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import os
import re
import shutil
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
    load_entries,
    render,
    render_html,
    render_markdown,
)
from advbench.store import ResultsStore

SHA_WIDE, SHA_SMALL, SHA_PRUNED = "aa" * 32, "bb" * 32, "cc" * 32


def _hash(tag: str) -> str:
    return (tag * 64)[:64]


def make_run(config_hash: str, *, name: str, sha: str | None, curve: list[tuple[float, float]], clean: float,
             attacks: list[str], n: int = 100, norm: str = "linf", created: str = "2024-01-01T00:00:00+00:00",
             parent: str | None = None, ratio: float | None = None, status: str = "finished") -> dict:
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
    return {
        "config_hash": config_hash,
        "config": {"model": model, "dataset": "digits", "norm": norm, "eps": [e for e, _ in curve],
                   "attacks": [{"name": a, "steps": 10} for a in attacks], "n_samples": n, "seed": 0},
        "code_version": "0.1.0+gittest",
        "metrics": metrics,
        "cost": {"gradients": 1, "queries": 1, "wall_time_s": 0.1},
        "status": status,
        "created_at": created,
    }


def demo_runs() -> list[dict]:
    """Two dense models, a compressed child of the first, a second (stronger) run of the first, a
    single-eps named model under L2, and a failed run and a min-max run that must be skipped."""
    wide_1 = make_run(_hash("1"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.8), (0.1, 0.5), (0.2, 0.1)],
                      clean=0.95, attacks=["fgsm", "pgd"], created="2024-01-01T00:00:00+00:00")
    wide_2 = make_run(_hash("2"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.1, 0.45), (0.2, 0.15), (0.3, 0.02)],
                      clean=0.95, attacks=["pgd", "apgd-ce"], created="2024-02-01T00:00:00+00:00")
    small = make_run(_hash("3"), name="small_cnn", sha=SHA_SMALL, curve=[(0.05, 0.7), (0.1, 0.4), (0.2, 0.2)],
                     clean=0.9, attacks=["fgsm", "pgd"], n=20)
    pruned = make_run(_hash("4"), name="wide_cnn-pruned", sha=SHA_PRUNED, curve=[(0.05, 0.75), (0.1, 0.6), (0.2, 0.3)],
                      clean=0.93, attacks=["fgsm", "pgd"], parent=SHA_WIDE, ratio=4.0)
    named = make_run(_hash("5"), name="fresh_cnn", sha=None, curve=[(0.5, 0.4)], clean=0.6, attacks=["pgd"], norm="l2")
    failed = make_run(_hash("6"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.0), (0.2, 0.0)], clean=0.95,
                      attacks=["pgd"], status="failed", created="2024-03-01T00:00:00+00:00")
    minmax = make_run(_hash("7"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.0), (0.2, 0.0)], clean=0.95,
                      attacks=["msd"], created="2024-03-02T00:00:00+00:00")
    minmax["config"]["models"] = [minmax["config"]["model"]]
    minmax["metrics"] = {"n": 100, "attack": "msd", "asr_all": 0.9, "clean_accuracy": 0.95, "eps": 0.2}
    return [wide_1, wide_2, small, pruned, named, failed, minmax]


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


def by_model(entries: list[LeaderboardEntry]) -> dict[str, LeaderboardEntry]:
    return {e.model: e for e in entries}


def valid_entry_dict() -> dict:
    return {
        "model": "cnn", "model_sha256": SHA_SMALL, "dataset": "digits", "norm": "linf",
        "clean_accuracy": 0.9, "robust_accuracy": 0.4, "eps": 0.1,
        "curve": [{"eps": 0.05, "robust_accuracy": 0.7}, {"eps": 0.1, "robust_accuracy": 0.4}],
        "n_samples": 100, "config_hashes": [_hash("1")], "code_version": "0.1.0",
        "date": "2024-01-01T00:00:00+00:00", "attacks": ["pgd"],
    }


# ---------------------------------------------------------------------------------------------- schema
def test_valid_entry_round_trips_through_json():
    entry = LeaderboardEntry.model_validate(valid_entry_dict())
    assert LeaderboardEntry.model_validate_json(entry.model_dump_json()) == entry
    assert entry.schema_version == 1 and entry.key == ("digits", "linf", SHA_SMALL)


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


def test_string_inside_the_curve_fails_naming_the_point():
    data = valid_entry_dict()
    data["curve"][0]["robust_accuracy"] = "0.7"
    with pytest.raises(ValidationError) as info:
        LeaderboardEntry.model_validate(data)
    assert info.value.errors()[0]["loc"] == ("curve", 0, "robust_accuracy")


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
        ({"eps": 0.05}, "largest eps"),
        ({"robust_accuracy": 0.5}, "curve's value"),
        ({"curve": [{"eps": 0.1, "robust_accuracy": 0.4}, {"eps": 0.05, "robust_accuracy": 0.7}]}, "sorted"),
        ({"curve": []}, "curve"),
        ({"attacks": []}, "attacks"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_schema_rejects_bad_values(change: dict, message: str):
    data = valid_entry_dict()
    data.update(change)
    with pytest.raises(ValidationError, match=re.escape(message)):
        LeaderboardEntry.model_validate(data)


def test_accuracy_above_one_fails():
    data = valid_entry_dict()
    data["curve"][1]["robust_accuracy"] = data["robust_accuracy"] = 1.5
    with pytest.raises(ValidationError) as info:
        LeaderboardEntry.model_validate(data)
    locs = {e["loc"] for e in info.value.errors()}
    assert ("robust_accuracy",) in locs and ("curve", 1, "robust_accuracy") in locs
    assert "less than or equal to 1" in str(info.value)


# ---------------------------------------------------------------------------------------------- merge
def test_runs_of_one_model_merge_to_the_minimum_per_eps(entries: list[LeaderboardEntry]):
    wide = by_model(entries)["wide_cnn"]
    assert [(p.eps, p.robust_accuracy) for p in wide.curve] == [(0.05, 0.8), (0.1, 0.45), (0.2, 0.1), (0.3, 0.02)]
    assert (wide.eps, wide.robust_accuracy, wide.clean_accuracy) == (0.3, 0.02, 0.95)
    assert wide.config_hashes == sorted([_hash("1"), _hash("2")])  # not the failed or the min-max run
    assert wide.attacks == ["fgsm", "pgd", "apgd-ce"]
    assert wide.date == "2024-02-01T00:00:00+00:00" and wide.code_version == "0.1.0+gittest"
    assert wide.model_sha256 == SHA_WIDE and wide.parent_sha256 is None and wide.compression_ratio is None


def test_failed_and_minmax_runs_are_skipped(entries: list[LeaderboardEntry]):
    used = {h for e in entries for h in e.config_hashes}
    assert used == {_hash(t) for t in "12345"}
    assert sorted(e.key for e in entries) == sorted([
        ("digits", "l2", "fresh_cnn"), ("digits", "linf", SHA_SMALL), ("digits", "linf", SHA_WIDE),
        ("digits", "linf", SHA_PRUNED),
    ])


def test_compressed_child_and_single_eps_entries(entries: list[LeaderboardEntry]):
    models = by_model(entries)
    pruned = models["wide_cnn-pruned"]
    assert (pruned.parent_sha256, pruned.compression_ratio, pruned.robust_accuracy) == (SHA_WIDE, 4.0, 0.3)
    fresh = models["fresh_cnn"]
    assert fresh.model_sha256 is None and [(p.eps, p.robust_accuracy) for p in fresh.curve] == [(0.5, 0.4)]
    assert (fresh.norm, fresh.eps, fresh.n_samples) == ("l2", 0.5, 100)


def test_merge_with_a_weaker_later_run_keeps_the_stronger_numbers():
    runs = demo_runs()[:2]
    runs[1] = make_run(_hash("2"), name="wide_cnn", sha=SHA_WIDE, curve=[(0.05, 0.9), (0.2, 0.6)], clean=0.95,
                       attacks=["fgsm"], created="2024-02-01T00:00:00+00:00")
    (wide,) = entries_from_runs(runs)
    assert [(p.eps, p.robust_accuracy) for p in wide.curve] == [(0.05, 0.8), (0.1, 0.5), (0.2, 0.1)]


def test_a_run_that_breaks_the_schema_is_a_store_error_naming_it(tmp_path: Path):
    bad = make_run(_hash("9"), name="broken", sha=_hash("d"), curve=[(0.1, 1.5), (0.2, 1.2)], clean=1.0,
                   attacks=["pgd"])
    with pytest.raises(StoreError, match=r"99999999.*robust_accuracy"):
        build_leaderboard(write_store(tmp_path / "r.db", [bad]), tmp_path / "out")


# ---------------------------------------------------------------------------------------------- build / load
def test_build_writes_one_valid_json_file_per_entry(store_path: Path, tmp_path: Path):
    paths = build_leaderboard(store_path, tmp_path / "entries")
    assert [p.name for p in paths] == [
        f"digits__l2__fresh_cnn__{hashlib.sha256(b'fresh_cnn').hexdigest()[:12]}.json",
        f"digits__linf__small_cnn__{SHA_SMALL[:12]}.json",
        f"digits__linf__wide_cnn__{SHA_WIDE[:12]}.json",
        f"digits__linf__wide_cnn-pruned__{SHA_PRUNED[:12]}.json",
    ]
    assert sorted(tmp_path.joinpath("entries").iterdir()) == sorted(paths)
    for path in paths:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert list(data) == sorted(data) and text.endswith("\n")
        assert isinstance(data["robust_accuracy"], float) and isinstance(data["n_samples"], int)
        LeaderboardEntry.model_validate(data)


def test_build_is_deterministic_whatever_the_insertion_order(store_path: Path, tmp_path: Path):
    first = build_leaderboard(store_path, tmp_path / "a")
    again = build_leaderboard(store_path, tmp_path / "a")
    other_store = write_store(tmp_path / "reversed.db", list(reversed(demo_runs())))
    second = build_leaderboard(other_store, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in again] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_rebuild_removes_stale_entries_but_keeps_other_files(store_path: Path, tmp_path: Path):
    out = tmp_path / "entries"
    build_leaderboard(store_path, out)
    stale = out / "digits__linf__gone__000000000000.json"
    stale.write_text((out / f"digits__linf__small_cnn__{SHA_SMALL[:12]}.json").read_text())
    (out / "README.txt").write_text("keep me")
    build_leaderboard(store_path, out)
    assert not stale.exists() and (out / "README.txt").exists()


def test_build_missing_store_is_an_error(tmp_path: Path):
    with pytest.raises(MissingPathError, match="does not exist"):
        build_leaderboard(tmp_path / "nope.db", tmp_path / "out")
    assert not (tmp_path / "nope.db").exists()


def test_load_entries_errors_name_the_file(entries: list[LeaderboardEntry], tmp_path: Path):
    folder = tmp_path / "entries"
    target = folder / f"digits__linf__small_cnn__{SHA_SMALL[:12]}.json"
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


def test_load_entries_rejects_two_files_for_one_model(entries: list[LeaderboardEntry], tmp_path: Path):
    folder = tmp_path / "entries"
    source = folder / f"digits__linf__small_cnn__{SHA_SMALL[:12]}.json"
    shutil.copy(source, folder / "copy.json")
    with pytest.raises(ConfigError, match="both hold model 'small_cnn'"):
        load_entries(folder)


# ---------------------------------------------------------------------------------------------- markdown
def test_markdown_has_one_table_per_board_sorted_by_robust_accuracy(entries: list[LeaderboardEntry]):
    text = render_markdown(entries)
    assert text == render_markdown(list(reversed(entries)))
    assert text.index("## digits · L2") < text.index("## digits · L∞")
    linf = text[text.index("## digits · L∞"):]
    rows = [line for line in linf.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[1] for c in cells] == ["wide_cnn-pruned", "small_cnn", "wide_cnn"]
    assert [c[0] for c in cells] == ["1", "2", "3"]
    assert cells[0][2:6] == ["93.0%", "30.0%", "0.2", "wide_cnn (4.0×)"]
    assert cells[2][3:5] == ["2.0%", "0.3"] and cells[2][6] == "fgsm, pgd, apgd-ce"
    assert f"`{_hash('1')[:12]}`, `{_hash('2')[:12]}`" in cells[2][9]


# ---------------------------------------------------------------------------------------------- html
class _PageParser(HTMLParser):
    """Collects, per leaderboard table, the rows (attributes) grouped by <tbody>, and the SVG series."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.headers: dict[str, list[dict]] = {}
        self.series: list[dict] = []
        self.polylines = 0
        self.external: list[str] = []
        self._table: str | None = None

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
        elif tag == "polyline":
            self.polylines += 1

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


def test_html_tables_rows_and_children_follow_their_parent(entries: list[LeaderboardEntry]):
    parsed = parse_page(render_html(entries))
    assert list(parsed.tables) == ["table-digits-l2", "table-digits-linf"]
    families = parsed.tables["table-digits-linf"]
    assert [[r["data-model"] for r in family] for family in families] == [
        ["small_cnn"], ["wide_cnn", "wide_cnn-pruned"],  # families ordered by their head's robust accuracy
    ]
    child = families[1][1]
    assert (child["data-depth"], child["data-parent-sha256"], child["class"]) == ("1", SHA_WIDE, "child")
    assert families[1][0]["data-depth"] == "0" and families[0][0]["data-rank"] == "2"
    assert float(child["data-robust-accuracy"]) == 0.3
    keys = [h["data-key"] for h in parsed.headers["table-digits-linf"]]
    assert keys[:5] == ["rank", "model", "clean_accuracy", "robust_accuracy", "eps"]
    assert {"eps:0.05", "eps:0.1", "eps:0.2", "eps:0.3", "compression_ratio", "n_samples"} <= set(keys)
    assert [s["data-model"] for s in parsed.series] == ["fresh_cnn", "wide_cnn-pruned", "small_cnn", "wide_cnn"]
    assert parsed.polylines == 4
    page = render_html(entries)
    assert "↳" in page and "4.0×" in page


def test_html_with_an_orphan_child_and_no_entries(entries: list[LeaderboardEntry]):
    orphan_only = [e for e in entries if e.model != "wide_cnn"]
    families = parse_page(render_html(orphan_only)).tables["table-digits-linf"]
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
    var table = document.getElementById("table-digits-linf");
    var order = function () {
      return Array.prototype.map.call(table.querySelectorAll("tbody tr"), function (r) {
        return r.getAttribute("data-model");
      });
    };
    var click = function (key) {
      var th = table.querySelector('th[data-key="' + key + '"]');
      th.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
      return order().concat([th.getAttribute("aria-sort")]);
    };
    out.initial = order();
    out.robust_1 = click("robust_accuracy");
    out.clean_1 = click("clean_accuracy");
    out.clean_2 = click("clean_accuracy");
    out.n_1 = click("n_samples");
    out.model_1 = click("model");
    out.model_2 = click("model");
    out.compression_1 = click("compression_ratio");
    out.polylines = document.querySelectorAll("svg.curve polyline").length;
    out.polyline_width = document.querySelector("#digits-linf svg.curve polyline").getBBox().width;
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


def test_html_in_headless_chromium_sorts_on_header_click(entries: list[LeaderboardEntry], tmp_path: Path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    page = render_html(entries)
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
    wide, pruned, small = "wide_cnn", "wide_cnn-pruned", "small_cnn"
    # the rows the page shows, children right under their parent
    assert result["initial"] == [small, wide, pruned]
    # robust starts sorted descending, so the first click sorts ascending (by the head row's value)
    assert result["robust_1"] == [wide, pruned, small, "ascending"]
    # numbers sort descending on the first click, ascending on the second
    assert result["clean_1"] == [wide, pruned, small, "descending"]
    assert result["clean_2"] == [small, wide, pruned, "ascending"]
    # numeric, not lexicographic: n = 100 (wide) beats n = 20 (small)
    assert result["n_1"] == [wide, pruned, small, "descending"]
    # text sorts ascending first
    assert result["model_1"] == [small, wide, pruned, "ascending"]
    assert result["model_2"] == [wide, pruned, small, "descending"]
    # dense heads have no compression ratio: empty values sort last, the child stays with its parent
    assert result["compression_1"] == [small, wide, pruned, "descending"]
    assert result["polylines"] == 4 and result["polyline_width"] > 100


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
