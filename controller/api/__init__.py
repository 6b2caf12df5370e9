"""The operator dashboard: a FastAPI app with a JSON API, live updates and pages.

:func:`controller.api.app.create_app` builds the app from :class:`ApiSettings`; ``sdlab
serve`` runs it with uvicorn. ``docs/dashboard.md`` describes the API, the roles and the
pages.
"""

from __future__ import annotations

from controller.api.settings import ApiSettings

__all__ = ["ApiSettings"]
