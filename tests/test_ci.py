"""CI runs exactly the test command the README gives."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = ROOT / "README.md"
    blocks = re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()
                if re.search(r"\bpython -m pytest\b|^pytest\b", line.strip())]
    assert commands, "README.md gives no test command (python -m pytest)"
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")}
    assert commands[0] in ci_lines, f".ci/run does not run the README's test command {commands[0]!r}"


def test_ci_script_is_strict():
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script  # a failing step fails CI
