"""The README stays true: the test command CI runs is the one it gives, and every setting is in it."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.+?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        env = (
            field.validation_alias
            if isinstance(field.validation_alias, str)
            else f"DISPATCHER_{name.upper()}"
        )
        assert f"`{env}`" in README, f"{env} is missing from the README settings table"


def test_procfile_entries_are_cli_commands() -> None:
    from typer.main import get_command

    from dispatcher.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(": ")
        assert process in {"web", "worker", "urgent", "beat"}
        assert command.split()[0] == "outage-dispatcher" and command.split()[1] in commands
    assert "urgent: outage-dispatcher worker --queues urgent --concurrency 1" in README  # the lane
