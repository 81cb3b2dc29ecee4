"""Formatting for the CLI: rich tables on a terminal, plain text when piped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:  # piped or captured: wide enough that tables do not fold
    console = Console(width=160)
errors = Console(stderr=True, soft_wrap=True)


def table(title: str | None, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    out = Table(title=title, title_justify="left", header_style="bold")
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    console.print(out)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def pairs(title: str, items: Iterable[tuple[str, Any]]) -> None:
    out = Table(title=title, title_justify="left", show_header=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in items:
        out.add_row(key, cell(value))
    console.print(out)
