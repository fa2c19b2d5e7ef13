"""The source PostgreSQL as a Dagster resource: a configured DSN, or the embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from pipeline_assets.lib.postgres import connect_with_retry, embedded_dsn, redact_dsn


class SourcePostgres(dg.ConfigurableResource):
    """Connections to the source PostgreSQL, retried while it is briefly unavailable."""

    dsn: str | None = Field(
        default=None,
        description="libpq DSN (URI or key=value). Unset: the embedded server in embedded_dir.",
    )
    embedded_dir: str = Field(description="Data folder of the embedded PostgreSQL server.")
    connect_attempts: int = Field(default=5, description="Connect attempts before giving up.")
    backoff_seconds: float = Field(
        default=0.5, description="First wait between attempts; doubles each retry."
    )

    def get_dsn(self) -> str:
        """The DSN to connect with, starting the embedded server if none is configured."""
        if self.dsn:
            return self.dsn
        return embedded_dsn(Path(self.embedded_dir))

    def redacted_dsn(self) -> str:
        """The DSN without its password, safe for logs and metadata."""
        return redact_dsn(self.get_dsn())

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A psycopg connection, closed on exit; raises SourceUnavailableError if unreachable."""
        log = dg.get_dagster_logger()
        dsn = self.get_dsn()
        redacted = redact_dsn(dsn)

        def on_retry(attempt: int, delay: float, error: Exception) -> None:
            # `error` arrives with the password already scrubbed by connect_with_retry.
            log.warning(
                f"source postgres {redacted}: attempt {attempt}/{self.connect_attempts} failed "
                f"({str(error).strip()}); retrying in {delay:.1f}s"
            )

        conn = connect_with_retry(
            dsn,
            attempts=self.connect_attempts,
            backoff_seconds=self.backoff_seconds,
            on_retry=on_retry,
        )
        try:
            yield conn
        finally:
            conn.close()
