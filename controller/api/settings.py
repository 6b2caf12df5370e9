"""Settings of the dashboard, passed to :func:`controller.api.app.create_app`.

Nothing below the entry point reads the environment: ``sdlab serve`` builds an
:class:`ApiSettings` from its options and hands it to the app factory, and tests build their
own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """What the dashboard needs to know.

    Attributes:
        db_url: SQLAlchemy URL of the experiment store.
        data_dir: Where uploaded campaign files and the logs of started runs are kept.
        host: Interface uvicorn binds to (loopback unless told otherwise).
        port: TCP port.
        session_ttl_s: Lifetime of a browser session, in seconds.
        kdf_iterations: PBKDF2-SHA256 iterations for new password and token hashes (each
            hash records its own count, so changing this keeps old hashes valid).
        secure_cookies: Send the session cookie only over HTTPS (set behind a TLS proxy).
        stream_poll_s: How often the live stream looks for changes in the store, in seconds.
        instrument_quiet_s: An instrument not heard from for this long is shown as quiet.
        python: Interpreter that runs ``sdlab run`` for a started campaign.
        ray_address: Ray cluster the started runs join (``None``: each starts its own).
        max_body_bytes: Largest request body accepted (413 beyond), in bytes.
        login_failures_per_user: Failed logins of one name (within ``login_window_s``)
            that lock it out for ``login_lockout_s``.
        login_failures_per_address: The same, per client address.
        login_window_s: Window in which failed logins are counted, in seconds.
        login_lockout_s: How long a lockout lasts, in seconds.
        sqlite_immediate_writes: Begin SQLite transactions that may write with ``BEGIN
            IMMEDIATE`` (see :mod:`controller.store.engine`); ``False`` only for the
            before/after comparison of ``benchmarks/dashboard_load.py``.
    """

    model_config = ConfigDict(frozen=True)

    db_url: str = "sqlite:///sdlab.db"
    data_dir: Path = Path(".sdlab")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0)
    kdf_iterations: int = Field(default=200_000, ge=1)
    secure_cookies: bool = False
    stream_poll_s: float = Field(default=1.0, gt=0)
    instrument_quiet_s: float = Field(default=30.0, gt=0)
    python: str = sys.executable
    ray_address: str | None = None
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: float = Field(default=900.0, gt=0)
    login_lockout_s: float = Field(default=900.0, gt=0)
    sqlite_immediate_writes: bool = True

    @property
    def campaigns_dir(self) -> Path:
        """Where uploaded campaign files are kept (one ``<name>.toml`` each)."""
        return self.data_dir / "campaigns"

    @property
    def runs_dir(self) -> Path:
        """Where the output of runs started from the dashboard goes."""
        return self.data_dir / "runs"
