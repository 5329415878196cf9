"""The console commands of the installed package (pyproject ``[project.scripts]``) run the same ``main`` as
the root scripts. CI installs the package into its venv (``pip install -e .``), so there they must exist."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_names_a_root_script_module():
    roots = {p.stem for p in ROOT.glob("*.py")}
    for command, target in COMMANDS.items():
        module, _, func = target.partition(":")
        assert module.startswith("ntps.scripts.") and func == "run", command
        assert module.rsplit(".", 1)[1] in roots, f"{command}: no root script for {module}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_installed_command_prints_the_scripts_help(command):
    exe = Path(sys.executable).parent / command
    if not exe.exists():
        pytest.skip(f"{command} is not installed in this venv (pip install -e . installs it; CI does)")
    module = COMMANDS[command].split(":")[0].rsplit(".", 1)[1]
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {module}.py"), out.stdout[:200]
