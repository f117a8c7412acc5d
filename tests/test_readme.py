"""The README's two commands are the ones CI and newcomers run."""

import re

from conftest import REPO


def commands():
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .venv && [^\n]+)\n```", text)


def test_readme_has_exactly_two_setup_commands():
    cmds = commands()
    assert len(cmds) == 2
    assert "snakemake --cores" in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands()[1] in ci
