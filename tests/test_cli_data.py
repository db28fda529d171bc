"""The `advbench data` commands: inspect (tables and --json), export to COCO, generate-aerial, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advbench.datasets.detection import load_detection_dataset


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from advbench.datasets.detection import generate_aerial_dataset

    return generate_aerial_dataset(tmp_path_factory.mktemp("cli_data") / "syn", n_images=6, size=(128, 96), seed=3)


def test_generate_aerial_writes_a_loadable_folder(run_cli, tmp_path) -> None:
    out_dir = tmp_path / "scenes"
    code, out, err = run_cli("data", "generate-aerial", str(out_dir), "--n-images", "3",
                             "--width", "96", "--height", "64", "--seed", "5")
    assert code == 0, err
    assert out == "" and len(err.strip().splitlines()) == 1 and f"evd4uav:{out_dir}" in err
    samples = load_detection_dataset(f"evd4uav:{out_dir}")
    assert len(samples) == 3 and {s.image_size for s in samples} == {(96, 64)}
    # a non-empty folder is refused with the one-line error
    code, _, err = run_cli("data", "generate-aerial", str(out_dir))
    assert code == 2 and "not an empty folder" in err and len(err.strip().splitlines()) == 1


def test_inspect_prints_tables(run_cli, aerial) -> None:
    code, out, err = run_cli("data", "inspect", f"evd4uav:{aerial}?masks=true")
    assert code == 0, err
    for word in ("classes", "altitudes", "colours", "types", "image sizes", "Car", "50m", "128x96"):
        assert word in out


def test_inspect_json_is_one_object_with_the_counts(run_cli, aerial) -> None:
    code, out, err = run_cli("data", "inspect", f"evd4uav:{aerial}", "--json")
    assert code == 0, err
    stats = json.loads(out)
    samples = load_detection_dataset(f"evd4uav:{aerial}")
    assert stats["images"] == len(samples) == 6 and stats["boxes"] == sum(len(s) for s in samples)
    assert sum(stats["classes"].values()) == stats["boxes"] == sum(stats["colours"].values())
    assert sum(a["images"] for a in stats["altitudes"].values()) == 6 and stats["image_sizes"] == {"128x96": 6}
    assert stats["spec"] == f"evd4uav:{aerial}"


def test_export_writes_coco_that_reads_back(run_cli, aerial, tmp_path) -> None:
    target = tmp_path / "out" / "ann.json"
    target.parent.mkdir()
    code, out, err = run_cli("data", "export", f"evd4uav:{aerial}?altitude=50m,70m",
                             "--coco", str(target))
    assert code == 0, err
    original = load_detection_dataset(f"evd4uav:{aerial}?altitude=50m,70m")
    again = load_detection_dataset(f"coco:{target}")
    boxes = sum(len(s) for s in original)
    assert sum(len(s) for s in again) == boxes and len(again) == len(original)
    assert f"{len(original)} images, {boxes} boxes" in err and len(err.strip().splitlines()) == 1
    assert not [p for p in target.parent.iterdir() if p != target], "no temp files left behind"


def test_malformed_label_file_gives_the_one_line_error(run_cli, aerial, tmp_path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(aerial, broken)
    label = broken / "bb" / "syn_0002.txt"
    lines = label.read_text().splitlines()
    lines[1] = "0 4 5 nine 12"
    label.write_text("\n".join(lines) + "\n")
    for args in (["inspect", f"evd4uav:{broken}"], ["export", f"evd4uav:{broken}", "--coco", str(tmp_path / "x.json")]):
        code, out, err = run_cli("data", *args)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "syn_0002.txt" in err and "line 2" in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["inspect", "nosuch:/x"], "nosuch"),
        (["inspect", "evd4uav:/does/not/exist"], "/does/not/exist"),
        (["export", "coco:/does/not/exist.json", "--coco", "out.json"], "exist.json"),
        (["generate-aerial", "scenes", "--n-images", "0"], "n_images"),
    ],
)
def test_bad_specs_and_arguments_exit_2(run_cli, monkeypatch, tmp_path, args, match) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("data", *args)
    assert code == 2 and match in err and "Traceback" not in err
