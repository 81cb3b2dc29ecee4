"""Load test of a running rating engine with locust: quotes for varied policies at a steady rate.

Start a server (``ratekeeper --registry FOLDER serve --port 8000 --workers 2``) with a
Production version of a model that prices the beMTPL97 rating factors (coverage, fuel, use,
fleet, ageph, bm, power, agec; exposure ``expo``), then, headless::

    locust --headless -u 50 -r 50 -t 20s --host http://127.0.0.1:8000 \\
        -f benchmarks/locustfile.py --csv out/locust

Each user asks for ``--quotes-per-user`` quotes per second (default 20), so 50 users offer
1,000 quotes/s. The policies are 300 real beMTPL97 policies sampled at import from
``../shared/data/beMTPL97.parquet`` (or ``$BEMTPL97_PARQUET``); without the file, 300 policies
are generated inside the portfolio's ranges. A quote that is not a 200 with a numeric
``prediction`` is a failure. Bounded in time (``-t``) and in requests (``--max-quotes``, after
which locust stops). locust is closed-loop: a slow answer delays that user's next request, so
its percentiles understate stalls; benchmarks/openloop.py measures from the scheduled time.
Benchmark-only: locust is not a dependency of ratekeeper.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from pathlib import Path
from typing import Any

from locust import constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

DATA = Path(os.environ.get("BEMTPL97_PARQUET")
            or Path(__file__).resolve().parents[2] / "shared" / "data" / "beMTPL97.parquet")
CATEGORICAL = {
    "coverage": ["TPL", "TPL+", "TPL++"],
    "fuel": ["gasoline", "diesel"],
    "use": ["private", "work"],
    "fleet": ["0", "1"],
}
NUMERIC = {"ageph": (18, 95), "bm": (0, 22), "power": (10, 243), "agec": (0, 48)}
N_POLICIES = 300
log = logging.getLogger("ratekeeper.locust")


def real_policies(path: Path, count: int) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_parquet(path, columns=[*CATEGORICAL, *NUMERIC, "expo"])
    sample = frame.sample(n=count, random_state=97)
    return [
        {
            **{name: str(row[name]) for name in CATEGORICAL},
            **{name: int(row[name]) for name in NUMERIC},
            "expo": float(row["expo"]),
        }
        for row in sample.to_dict("records")
    ]


def generated_policies(count: int) -> list[dict[str, Any]]:
    rng = random.Random(97)
    return [
        {
            **{name: rng.choice(levels) for name, levels in CATEGORICAL.items()},
            **{name: rng.randint(low, high) for name, (low, high) in NUMERIC.items()},
            "expo": round(rng.uniform(0.05, 1.0), 4),
        }
        for _ in range(count)
    ]


def load_policies() -> list[dict[str, Any]]:
    if DATA.exists():
        try:
            return real_policies(DATA, N_POLICIES)
        except ImportError:
            log.warning("pandas/pyarrow missing: generating policies instead of reading %s", DATA)
    else:
        log.warning("%s not found: generating %d policies", DATA, N_POLICIES)
    return generated_policies(N_POLICIES)


POLICIES = load_policies()
_sent = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="frequency", help="model to quote (its Production)")
    parser.add_argument("--quotes-per-user", type=float, default=20.0,
                        help="quotes per second per user (50 users x 20 = 1,000/s)")
    parser.add_argument("--max-quotes", type=int, default=200_000,
                        help="stop the whole run after this many quotes")


class Quoter(FastHttpUser):
    """One quoting client: prices a random real policy, checks the answer, at a fixed pace."""

    def wait_time(self) -> float:
        return constant_throughput(self.environment.parsed_options.quotes_per_user)(self)

    @task
    def quote(self) -> None:
        options = self.environment.parsed_options
        if next(_sent) > options.max_quotes:
            if self.environment.runner is not None:
                self.environment.runner.quit()
            return
        with self.client.post(
            f"/v1/models/{options.model}/quote",
            json=random.choice(POLICIES),
            name="/v1/models/[model]/quote",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                prediction = response.json()["prediction"]
            except (ValueError, KeyError, TypeError):
                response.failure("no prediction in the answer")
                return
            if not isinstance(prediction, (int, float)) or prediction < 0:
                response.failure(f"bad prediction {prediction!r}")
            else:
                response.success()
