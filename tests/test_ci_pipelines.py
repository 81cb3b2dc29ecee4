"""The example CI pipelines in deploy/ci/: they parse, and every `ratekeeper` command they run
exists in our CLI with the options they give (parsed by the CLI itself)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from ratekeeper.cli.main import cli
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import motor_portfolio
from registries import governed_team, token_of
from remote_server import serving

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


TRAIN_PY = '''
"""A model repository's train.py, as docs/ci.md describes it (its data: a synthetic book)."""
import argparse, os
import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import motor_portfolio

parser = argparse.ArgumentParser()
parser.add_argument("--output", required=True)
book = motor_portfolio(3000, seed=11).iloc[:2000].copy()
book["claim_count"] = book["claim_count"] * float(os.environ.get("CLAIMS_FACTOR", "1"))
registry = rk.Registry()  # $RATEKEEPER_REGISTRY_URI, $RATEKEEPER_TOKEN
version = registry.register_model(
    train_glm(book), os.environ["MODEL"], training_data=book, target="claim_count",
    exposure="exposure",
)
open(parser.parse_args().output, "w").write(str(version.version))
'''


def test_the_gitlab_pipeline_files_a_request_only_when_the_gates_pass(tmp_path) -> None:
    """The promote job's script, run by bash against a real rating server: a close sibling of
    Production passes and is requested; a model whose premiums triple fails and is not."""

    team = governed_team(
        tmp_path / "registry",
        {"alice": ["modeller"], "carol": ["approver"], "ci": ["modeller"]},
        artifacts=tmp_path / "artifacts",
    )
    book = motor_portfolio(3000, seed=11)

    first = team["alice"].register_model(
        train_glm(book.iloc[100:2100]),
        "motor_frequency",
        training_data=book.iloc[100:2100],
        target="claim_count",
        exposure="exposure",
    )
    holdout = book.iloc[2000:]
    request = team["alice"].request_promotion(
        "motor_frequency", first.version, "Production", holdout=holdout
    )
    team["carol"].approve(request.id)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    holdout.to_parquet(repo / "data" / "holdout.parquet", index=False)
    (repo / "train.py").write_text(TRAIN_PY)
    shims = tmp_path / "bin"  # `ratekeeper` and `python` as the job's image has them
    shims.mkdir()
    for name, target in (("ratekeeper", "-m ratekeeper"), ("python", "")):
        (shims / name).write_text(f'#!/bin/sh\nexec {sys.executable} {target} "$@"\n')
        (shims / name).chmod(0o755)
    pipeline = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    script = "\n".join(pipeline["register-check-request"]["script"])
    src = str(Path(__file__).resolve().parents[1] / "src")
    try:
        with serving(team["root"]) as url:
            env = {
                **os.environ,
                **pipeline["variables"],
                "PATH": f"{shims}:{os.environ['PATH']}",
                "PYTHONPATH": src,
                "RATEKEEPER_REGISTRY_URI": url,
                "RATEKEEPER_TOKEN": token_of(team["ci"]),
                "CI_COMMIT_SHA": "0123abc",
            }
            runs = []
            for factor in ("1", "3"):
                runs.append(
                    subprocess.run(
                        ["bash", "-e", "-c", script],
                        cwd=repo,
                        env={**env, "CLAIMS_FACTOR": factor},
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                )
        passed, failed = runs
        assert passed.returncode == 0, passed.stderr
        assert "gates passed; validation report: gate-report.html" in passed.stdout
        assert "request 2: motor_frequency version 2 → Production (gates passed), pending" in (
            passed.stdout
        )
        assert failed.returncode == 1, failed.stderr
        assert "GATES FAILED; validation report: gate-report.html" in failed.stdout
        assert "request 3" not in failed.stdout
        requests = team["root"].list_requests("motor_frequency")
        assert [(r.version, r.status, r.requested_by) for r in requests] == [
            (1, "approved", "alice"),
            (2, "pending", "ci"),
        ]
        assert requests[1].comment == "commit 0123abc"
        report = json.loads((repo / "gate-report.json").read_text())
        assert (report["challenger_version"], report["champion_version"]) == (3, 1)
        assert not report["passed"]
    finally:
        for handle in team.values():
            handle.close()
