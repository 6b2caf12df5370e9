"""The OpenAPI schema, fuzzed with schemathesis: no request an admin can send yields a 500,
and every status code answered is one the schema documents for that operation.

Every operation but the live stream (which only ends after ``max_s``) gets generated path
parameters, queries and bodies, both schema-conforming and not, against a populated store.
Starting a campaign only records the request (no process is launched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from controller.api.app import create_app
from tests.controller.api_store import (
    RecordingLauncher,
    bearer,
    dash_settings,
    make_users,
    populate,
)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_yields_a_server_error(tmp_path: Path, mode: GenerationMode) -> None:
    cfg = dash_settings(tmp_path)
    app = create_app(cfg, launcher=RecordingLauncher(cfg))
    tokens = make_users(app.state.factory, cfg.kdf_iterations)
    populate(app.state.factory)
    headers = bearer(tokens["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    operations = [r.ok() for r in schema.exclude(path_regex=r"/stream$").get_all_operations()]
    assert len(operations) > 15
    unsatisfiable: list[str] = []
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            where = (
                f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                f"{response.status_code} {response.text[:300]}"
            )
            assert response.status_code < 500, where
            documented = set(case.operation.definition.raw.get("responses", {}))
            assert str(response.status_code) in documented, f"undocumented: {where}"

        try:
            check()
        except Unsatisfiable:
            # an operation without parameters or body has no invalid form to send
            assert mode is GenerationMode.NEGATIVE, op.label
            unsatisfiable.append(op.label)
    assert len(unsatisfiable) < len(operations) / 2, unsatisfiable
    app.state.engine.dispose()
