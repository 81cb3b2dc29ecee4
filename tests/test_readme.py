"""The README's Python example runs as written on a fresh registry."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    section = README.read_text().split("## The Python API in a dozen lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README lost its Python example"
    return match.group(1)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, motor_glm, portfolio):
    monkeypatch.chdir(tmp_path)  # the example creates ./pricing-registry
    monkeypatch.delenv("RATEKEEPER_TOKEN", raising=False)
    namespace = {
        "glm": motor_glm,
        "book": portfolio.iloc[:2000].reset_index(drop=True),
        "holdout": portfolio.iloc[2000:].reset_index(drop=True),
    }
    exec(compile(python_example(), str(README), "exec"), namespace)
    prices = namespace["scorer"].predict(namespace["book"])
    assert prices.shape == (2000,) and np.all(prices > 0)
    production = namespace["carol"].resolve("models:/motor_frequency/Production")
    assert (production.version, production.created_by) == (1, "alice")
    request = namespace["carol"].get_request(namespace["request"].id)
    assert (request.requested_by, request.decided_by) == ("alice", "carol")
    assert namespace["admin"].verify_audit().ok
    for name in ("admin", "alice", "carol"):
        namespace[name].close()
