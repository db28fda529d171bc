"""The README's commands, run as written: every fenced block marked ``<!-- docs-test: run -->`` (bash) or
``<!-- docs-test: python -->`` runs in one fresh folder, in order, with the installed ``advbench`` on PATH.
An example that stops working fails here instead of rotting in the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- docs-test: (run|python) -->\n```(?:bash|python)\n(.*?)```", re.S)


def marked_blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall(README.read_text())]


def commands(body: str) -> list[str]:
    """Shell commands of a bash block: comments dropped, backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_readme_marks_its_runnable_blocks() -> None:
    kinds = [kind for kind, _ in marked_blocks()]
    assert kinds.count("run") >= 1 and kinds.count("python") >= 1


@pytest.mark.slow
def test_readme_blocks_run_as_written(tmp_path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("ADVBENCH_LOG", None)
    for kind, body in marked_blocks():
        if kind == "python":
            script = tmp_path / "readme_example.py"
            script.write_text(body)
            done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"README python block failed:\n{done.stderr[-3000:]}"
            continue
        for command in commands(body):
            done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"README command failed: {command}\n{done.stderr[-3000:]}"
            if "--json" in command:
                import json

                payload = json.loads(done.stdout)
                models = command.split("--model ")[1].split()[0].split(",")
                assert "runs" in payload and len(payload["runs"]) == len(models)
