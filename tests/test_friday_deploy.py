"""benchmarks/friday_deploy.py, run as a script with tiny sizes so that it cannot rot: the whole
deploy (PostgreSQL, S3 on moto, two replicas under load, the pipeline's steps, the approval, a
staged rollout of two 1 s steps that ends in Production by itself) must go through with no failed
quote. It measures nothing here: the numbers are in docs/deploy.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg import unavailable_reason

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def can_run() -> None:
    pytest.importorskip("moto.server", reason="the deploy needs moto[server] (the dev extra)")
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("RATEKEEPER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RATEKEEPER_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def test_the_friday_deploy_runs_end_to_end_with_no_failed_quote(can_run, tmp_path) -> None:
    out = tmp_path / "friday.json"
    tiny = ["--rate", "10", "--policies", "50", "--book", "3000", "--workers", "1"]
    tiny += ["--settle", "0.5", "--steps", "50,100", "--bake", "1s"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "friday_deploy.py"), *tiny, "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    measured = json.loads(out.read_text())
    assert [label for label, _ in measured["steps"]] == [
        "train.py: train, register (CI)",
        "ratekeeper check: the gates (CI)",
        "ratekeeper request (CI)",
        "ratekeeper approve (approver)",
        "ratekeeper rollout start (deployer)",
    ]
    moves = [label for label, _ in measured["moves"]]
    assert moves == [
        "rollout start: 50 % of policies",
        "rollout step: 100 % of policies",
        "rollout complete",
    ]
    assert (measured["version"], measured["failed"], measured["replicas"]) == (2, 0, 2)
    assert measured["quotes"] > 0
    reached = measured["approval_to_replica_s"]
    assert len(reached) == 2 and all(s is not None and s >= 0 for s in reached)
    assert measured["approval_to_last_replica_s"] == max(reached)
    assert "Headline: approval → last replica serving v2: " in done.stdout
    assert f"Failed requests: 0 of {measured['quotes']:,}" in done.stdout
