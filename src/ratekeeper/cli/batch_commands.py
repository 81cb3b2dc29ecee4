"""``score``: reprice a whole book (Parquet or CSV) with a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ratekeeper.batch.scoring import CHUNK_ROWS
from ratekeeper.cli.output import console


@click.command()
@click.argument("model_uri")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The book to price (.parquet, .pq or .csv).",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Where the priced policies go (.parquet, .pq or .csv); replaced only on success.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(path_type=Path),
    help="Where rejected policies go, with their reasons [default: OUTPUT-STEM.rejects.EXT, "
    "written only when a policy is rejected].",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["parquet", "csv"]),
    help="Read and write this format whatever the file extensions.",
)
@click.option(
    "--max-rejects",
    type=click.IntRange(min=0),
    help="Fail (exit 2, nothing written) when more policies than this are rejected.",
)
@click.option(
    "--out-of-range",
    type=click.Choice(["reject", "clip"]),
    help="A number outside the training range: reject the policy, or clip it to the range's "
    "bound and name the field in the output's clipped_fields column [default: the version's "
    "validation policy, reject unless registered otherwise].",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=CHUNK_ROWS,
    show_default=True,
    help="Policies per chunk: memory grows with it, not with the size of the book.",
)
@click.pass_obj
def score(
    obj: Any,
    model_uri: str,
    input_path: Path,
    output_path: Path,
    rejects_path: Path | None,
    file_format: str | None,
    max_rejects: int | None,
    out_of_range: str | None,
    chunk_rows: int,
) -> None:
    """Price every policy of a book with MODEL_URI (e.g. models:/motor/Production).

    Every output row carries the prediction, the model name and version and the scoring time.
    Policies that fail the model's signature go to the rejects file with their reasons; the
    exit code is 0 even then (see --max-rejects).
    """
    summary = obj.registry.score_file(
        model_uri,
        input_path,
        output_path,
        rejects=rejects_path,
        chunk_rows=chunk_rows,
        progress=True,
        file_format=file_format,
        max_rejects=max_rejects,
        out_of_range=out_of_range,
    )
    console.print(summary.describe(), markup=False, highlight=False, soft_wrap=True)


COMMANDS: list[click.Command] = [score]
