"""Response and request shapes, for the OpenAPI document (the hot path serialises with orjson)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

POLICY_EXAMPLE = {
    "area": "C",
    "fuel": "diesel",
    "cover": "TPL",
    "driver_age": 40,
    "vehicle_age": 3,
    "bonus_malus": 2,
    "power_kw": 90,
    "exposure": 1.0,
}


class ProblemBody(BaseModel):
    field: str
    code: str = Field(
        description="missing, unknown_field, wrong_type, unseen_level, not_finite or out_of_range"
    )
    message: str
    row: int | None = Field(None, description="position in a list of policies")


class ErrorDetail(BaseModel):
    code: str
    message: str
    problems: list[ProblemBody] | None = None
    correlation_id: str | None = Field(
        None, description="internal_error only: the id the server logged the details under"
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class QuoteResponse(BaseModel):
    quote_id: str = Field(description="unique, time-ordered id of this quote")
    model: str
    version: int
    prediction: float = Field(description="expected value for the policy, exposure included")
    served_by: str = Field(
        description='"Production", "challenger" (a rollout\'s), an alias, or "version N" when '
        "pinned"
    )
    arm: str = Field(
        description='"champion" or "challenger" (a rollout); a pinned quote\'s "version N" or alias'
    )


class ScoreResult(BaseModel):
    quote_id: str | None = None
    prediction: float | None = None
    error: ErrorDetail | None = None
    arm: str | None = Field(None, description="during a rollout: champion or challenger")
    version: int | None = Field(None, description="during a rollout: the version that priced it")


class ScoreResponse(BaseModel):
    model: str
    version: int
    served_by: str
    arm: str = Field(description='"champion", "rollout" (each result names its arm) or the pin')
    results: list[ScoreResult]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "malformed JSON",
        404: "unknown model, version or alias",
        413: "request body or list too large",
        422: "the policy fails the model's signature (every problem, by field)",
        500: "an unexpected error (internal_error, with a correlation_id): never a traceback",
        503: "models still loading, or the version failed to load",
    }.items()
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "no valid bearer token"},
    403: {"model": ErrorBody, "description": "the token's user has no role that allows this"},
}

PRICING_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    401: {"model": ErrorBody, "description": "a pin that is not approved, without a token"},
    403: {"model": ErrorBody, "description": "a pin that is not approved: the role may not test"},
    429: {"model": ErrorBody, "description": "too many loads of uncached pinned versions"},
}

POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "one policy: rating factors (and exposure) by name",
                },
                "example": POLICY_EXAMPLE,
            }
        },
    }
}

PINNING = {
    "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
        {
            "name": "version",
            "in": "query",
            "required": False,
            "description": "pin a version: Production or Staging for anyone, any other with a "
            "bearer token whose role may test",
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "alias",
            "in": "query",
            "required": False,
            "description": "use the version behind this alias: a protected alias (champion) for "
            "anyone, any other with a bearer token whose role may test",
            "schema": {"type": "string"},
        },
    ]
}

POLICIES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "array",
                            "items": {"type": "object", "additionalProperties": True},
                        },
                        {
                            "type": "object",
                            "properties": {
                                "policies": {
                                    "type": "array",
                                    "items": {"type": "object", "additionalProperties": True},
                                }
                            },
                            "required": ["policies"],
                        },
                    ]
                },
                "example": {"policies": [POLICY_EXAMPLE]},
            }
        },
    }
}
