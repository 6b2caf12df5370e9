"""The shapes of the JSON API's refusals, as the OpenAPI schema documents them.

Every operation may answer 400 (a body that cannot be parsed at all), 401 (no valid token
or session), 403 (the role does not allow it, or a cookie request lacks its CSRF token),
413 (the body is too large; answered before it is read), 404 (something the path names
does not exist) and 409 (the request does not apply to the present state: pausing a
paused campaign, a name taken, a store conflict). These share ``{"detail": "<words>"}``.
Validation problems (422) list ``loc``, ``msg`` and ``type`` per problem, never the input; a
refused campaign upload lists each problem of the file by its key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Refusal(BaseModel):
    """Why a request was refused, in words."""

    detail: str


class ValidationProblem(BaseModel):
    """One problem of a request that failed validation (its input is never echoed)."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationRefusal(BaseModel):
    """A request that failed validation (422)."""

    detail: list[ValidationProblem]


class FileProblem(BaseModel):
    """One problem of an uploaded campaign file: the key it concerns and what is wrong."""

    key: str
    message: str


class UploadProblems(BaseModel):
    """The problems of an uploaded campaign file."""

    message: str
    problems: list[FileProblem]


class UploadRefusal(BaseModel):
    """A campaign upload refused (422): the file's problems, by key; or, for a malformed
    request, the validation problems."""

    detail: UploadProblems | list[ValidationProblem]


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "The body could not be parsed (not JSON, not a form)"},
    401: {"model": Refusal, "description": "No valid token or session"},
    403: {"model": Refusal, "description": "The role does not allow this, or CSRF token missing"},
    404: {"model": Refusal, "description": "What the path names does not exist"},
    409: {"model": Refusal, "description": "Does not apply to the present state"},
    413: {"model": Refusal, "description": "Request body too large (refused before reading)"},
    422: {"model": ValidationRefusal, "description": "Validation problems (input not echoed)"},
}
"""Refusals every operation of the JSON API may answer (``FastAPI(responses=...)``)."""
