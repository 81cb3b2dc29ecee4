"""The example CI pipelines in deploy/ci/: they parse, and every `ratekeeper` command they run
exists in our CLI with the options they give (parsed by the CLI itself)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from ratekeeper.cli.main import cli

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci"
# What the pipelines' variables stand for while their commands are parsed.
VALUES = {
    "MODEL": "motor_frequency",
    "HOLDOUT": "data/holdout.parquet",
    "VERSION": "7",
    "GITHUB_SHA": "0123abc",
    "CI_COMMIT_SHA": "0123abc",
}


def github_scripts(pipeline: dict) -> list[str]:
    assert set(pipeline[True]) == {"pull_request", "push"}  # YAML 1.1 reads `on:` as True
    assert pipeline[True]["push"] == {"branches": ["main"]}
    assert {"MODEL", "HOLDOUT", "RATEKEEPER_REGISTRY_URI", "RATEKEEPER_TOKEN"} <= set(
        pipeline["env"]
    )
    assert "secrets.RATEKEEPER_TOKEN" in pipeline["env"]["RATEKEEPER_TOKEN"]
    promote = pipeline["jobs"]["register-check-request"]
    assert promote["if"] == "github.event_name == 'push'"
    names = [step.get("name") for step in promote["steps"]]
    assert names.index("Promotion gates") < names.index("File the promotion request")
    report = next(s for s in promote["steps"] if s.get("name") == "Keep the validation report")
    assert report["if"] == "always()"  # the report of failed gates is kept too
    return [s["run"] for job in pipeline["jobs"].values() for s in job["steps"] if "run" in s]


def gitlab_scripts(pipeline: dict) -> list[str]:
    assert pipeline["stages"] == ["test", "promote"]
    assert set(pipeline["variables"]) == {"MODEL", "HOLDOUT"}
    promote = pipeline["register-check-request"]
    assert promote["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]
    assert promote["artifacts"]["when"] == "always"
    jobs = [v for v in pipeline.values() if isinstance(v, dict) and "script" in v]
    return [*pipeline["before_script"], *(line for job in jobs for line in job["script"])]


def ratekeeper_commands(scripts: list[str]) -> list[list[str]]:
    """Each `ratekeeper ...` command line of the scripts, its variables filled in."""
    commands = []
    for script in scripts:
        for line in script.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"\$(\w+)", lambda m: VALUES.get(m[1], m[0]), line))
            if words and words[0] == "ratekeeper":
                commands.append(words[1:])
    return commands


def parse(words: list[str]) -> click.Context:
    """Parse one command line as `ratekeeper` would (options, arguments and their types)."""
    root = click.Context(cli, info_name="ratekeeper")
    command = cli.get_command(root, words[0])
    assert command is not None, f"ratekeeper has no command {words[0]!r}"
    return command.make_context(words[0], words[1:], parent=root)


@pytest.mark.parametrize(
    ("file", "scripts"), [("github-actions.yml", github_scripts), ("gitlab-ci.yml", gitlab_scripts)]
)
def test_a_pipeline_parses_and_calls_only_commands_we_have(file, scripts, tmp_path, monkeypatch):
    pipeline = yaml.safe_load((CI / file).read_text())
    commands = ratekeeper_commands(scripts(pipeline))
    assert [c[0] for c in commands] == ["check", "request"]
    monkeypatch.chdir(tmp_path)  # the holdout must exist for its option to parse
    Path(VALUES["HOLDOUT"]).parent.mkdir()
    Path(VALUES["HOLDOUT"]).touch()
    check, request = (parse(c) for c in commands)
    assert check.params["model_uri"] == "models:/motor_frequency/7"
    assert check.params["against"] == "Production"
    assert check.params["report_path"] == Path("gate-report.html")
    assert check.params["json_path"] == Path("gate-report.json")
    assert (request.params["name"], request.params["version"]) == ("motor_frequency", 7)
    assert request.params["stage"] == "Production"
    assert request.params["holdout"] == Path(VALUES["HOLDOUT"])
    assert os.fspath(check.params["holdout"]) == VALUES["HOLDOUT"]


def test_parsing_would_catch_a_command_or_option_we_do_not_have(tmp_path) -> None:
    with pytest.raises(AssertionError, match="ratekeeper has no command 'gates'"):
        parse(["gates", "models:/m/1"])
    with pytest.raises(click.NoSuchOption, match="No such option '--baseline'"):
        parse(["check", "models:/m/1", "--holdout", __file__, "--baseline", "Production"])
