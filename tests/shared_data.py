"""The real portfolios in ../shared/data: read by path, never copied; skipped where absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_portfolio(name: str) -> Any:
    import pandas as pd

    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the real-portfolio tests run in CI, where ../shared/data "
            "sits beside the checkout"
        )
    return pd.read_parquet(path)


BE_CATEGORICAL = ["coverage", "fuel", "use", "fleet"]
BE_NUMERIC = ["ageph", "bm", "power", "agec"]
BE_FACTORS = BE_CATEGORICAL + BE_NUMERIC
