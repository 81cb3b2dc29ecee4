"""Model URIs: ``models:/NAME/Production``, ``models:/NAME@champion``, ``models:/NAME/3``,
``models:/NAME/latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ratekeeper.errors import InvalidInputError
from ratekeeper.registry.entities import Stage

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]{0,99}$")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<selector>[^/@]+)|@(?P<alias>[^/@]+))$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    stage: Stage | None = None
    alias: str | None = None
    latest: bool = False


def parse_model_uri(uri: str) -> ModelRef:
    match = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise InvalidInputError(
            f"not a model URI: {uri!r} (expected models:/NAME/STAGE, models:/NAME/VERSION "
            "or models:/NAME@ALIAS)"
        )
    name = check_name(match["name"])
    if match["alias"] is not None:
        return ModelRef(name, alias=check_alias(match["alias"]))
    selector = match["selector"]
    if selector.isdigit():
        return ModelRef(name, version=int(selector))
    if selector.lower() == "latest":
        return ModelRef(name, latest=True)
    return ModelRef(name, stage=Stage.parse(selector))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInputError(
            f"invalid model name {name!r}: use letters, digits, '_', '-', '.' (at most 200)"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or alias == "latest":
        raise InvalidInputError(
            f"invalid alias {alias!r}: use lower-case letters, digits, '_' or '-', starting "
            "with a letter (and not 'latest')"
        )
    if alias in {s.value.lower() for s in Stage}:
        raise InvalidInputError(f"invalid alias {alias!r}: it is the name of a stage")
    return alias
