"""Settings read from the environment, once, when the definitions load.

Every `pipeline` command and the code location read the same variables through `Settings.from_env`,
so a value set in the shell means the same thing on every run path.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from upath import UPath

DEFAULT_DATA_ROOT = "data"
DEFAULT_MARKET_START_DATE = "2020-01-01"

# Folders under the data root, fixed by the design.
SOURCE_WORKERS_DIR = "source/workers"
SOURCE_GEXBOT_DIR = "source/gexbot"
SOURCE_POSTGRES_DIR = "source/postgres"
STAGING_DIR = "staging"
LAKE_LAYERS = ("bronze", "silver", "gold", "hq")


class SettingsError(ValueError):
    """A setting in the environment has a value the pipelines cannot use."""


def _is_url(value: str) -> bool:
    return "://" in value


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _positive_number(env, name, default, what="a number of seconds")


def _date(env: Mapping[str, str], name: str, default: str) -> dt.date:
    raw = env.get(name) or default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: expected a date as YYYY-MM-DD") from exc


def _minutes_in(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name) or ""
    if not raw:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise SettingsError(f"{name}={raw!r}: expected whole minutes from {low} to {high}")
    return int(raw)


def _minutes_dividing_hour(env: Mapping[str, str], name: str, default: int) -> int:
    # A cron schedule of `*/N` minutes is evenly spaced only when N divides the hour.
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 60 or 60 % int(raw):
        allowed = ", ".join(str(m) for m in range(1, 61) if 60 % m == 0)
        raise SettingsError(f"{name}={raw!r}: expected whole minutes dividing the hour ({allowed})")
    return int(raw)


def _whole(env: Mapping[str, str], name: str, default: int, low: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < low:
        raise SettingsError(f"{name}={raw!r}: expected a whole number >= {low}")
    return int(raw)


def _positive_number(
    env: Mapping[str, str], name: str, default: float, *, what: str = "a number"
) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise SettingsError(f"{name}={raw!r}: expected {what} > 0")
    return value


def _hour_of_day(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= 23:
        raise SettingsError(f"{name}={raw!r}: expected a UTC hour from 0 to 23")
    return int(raw)


DEFAULT_HQ_NULL_RATE_LIMITS = {
    "canonical_domain": 0.10,
    "canonical_name": 0.20,
    "person_name": 0.10,
}


def _rate_limits(
    env: Mapping[str, str], name: str, default: Mapping[str, float]
) -> dict[str, float]:
    """`field=rate,...` (rates from 0 to 1) over the defaults; unknown fields are refused."""
    limits = dict(default)
    raw = (env.get(name) or "").strip()
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            rate = float(value)
        except ValueError:
            rate = float("nan")
        if key not in limits or not 0 <= rate <= 1:
            raise SettingsError(
                f"{name}={raw!r}: expected field=rate pairs with fields from "
                f"{', '.join(sorted(limits))} and rates from 0 to 1"
            )
        limits[key] = rate
    return limits


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={raw!r}: expected true or false")


@dataclass(frozen=True)
class Settings:
    """Where data lives and which sources the pipelines read.

    `data_root` is a local folder: the sources (collector SQLite, staged GEX JSON, the embedded
    Postgres) and the DuckDB stores live there. `lake_root` is where the Parquet layers go; it is
    the data root unless `PIPELINE_LAKE_ROOT` names another folder or an fsspec URL such as
    `s3://bucket/prefix`.
    """

    data_root: Path
    lake_root: str
    dx_source_dsn: str | None
    market_start_date: dt.date
    s3_endpoint_url: str | None
    market_staleness_limit_s: float = 300.0
    hq_start_date: dt.date = dt.date(2026, 1, 1)
    hq_microbatch_minutes: int = 5
    staging_microbatch_minutes: int = 15
    gex_retention_days: int = 14
    gex_archive: bool = False
    gex_max_download_bytes: int = 512 * 1024 * 1024
    gex_download_timeout_s: float = 30.0
    gex_backups_kept: int = 5
    hq_reconciliation_hour: int = 3
    hq_reconciliation_lookback_days: int = 2
    hq_max_lag_minutes: float = 60.0
    hq_mismatch_key_cap: int = 100
    hq_null_rate_limits: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_HQ_NULL_RATE_LIMITS)
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw_root = env.get("PIPELINE_DATA_ROOT") or DEFAULT_DATA_ROOT
        if _is_url(raw_root):
            raise SettingsError(
                f"PIPELINE_DATA_ROOT={raw_root!r}: expected a local folder (sources and the embedded "
                "databases live there); put the Parquet lake on object storage with "
                "PIPELINE_LAKE_ROOT=s3://bucket/prefix instead"
            )
        data_root = Path(raw_root).expanduser().resolve()
        raw_lake = env.get("PIPELINE_LAKE_ROOT") or ""
        lake_root = (
            raw_lake.rstrip("/")
            if _is_url(raw_lake)
            else str(Path(raw_lake).expanduser().resolve() if raw_lake else data_root)
        )
        raw_start = env.get("PIPELINE_MARKET_START_DATE") or DEFAULT_MARKET_START_DATE
        try:
            market_start_date = dt.date.fromisoformat(raw_start)
        except ValueError as exc:
            raise SettingsError(
                f"PIPELINE_MARKET_START_DATE={raw_start!r}: expected a date as YYYY-MM-DD"
            ) from exc
        return cls(
            data_root=data_root,
            lake_root=lake_root,
            dx_source_dsn=env.get("PIPELINE_DX_SOURCE_DSN") or None,
            market_start_date=market_start_date,
            s3_endpoint_url=env.get("PIPELINE_S3_ENDPOINT_URL") or None,
            market_staleness_limit_s=_positive_seconds(
                env, "PIPELINE_MARKET_STALENESS_LIMIT_S", 300.0
            ),
            hq_start_date=_date(env, "PIPELINE_HQ_START_DATE", "2026-01-01"),
            hq_microbatch_minutes=_minutes_in(env, "PIPELINE_HQ_MICROBATCH_MINUTES", 5, 5, 15),
            staging_microbatch_minutes=_minutes_dividing_hour(
                env, "PIPELINE_STAGING_MICROBATCH_MINUTES", 15
            ),
            gex_retention_days=_whole(env, "PIPELINE_GEX_RETENTION_DAYS", 14, 1),
            gex_archive=_flag(env, "PIPELINE_GEX_ARCHIVE"),
            gex_max_download_bytes=_whole(env, "PIPELINE_GEX_MAX_DOWNLOAD_MB", 512, 1)
            * 1024
            * 1024,
            gex_download_timeout_s=_positive_seconds(env, "PIPELINE_GEX_DOWNLOAD_TIMEOUT_S", 30.0),
            gex_backups_kept=_whole(env, "PIPELINE_GEX_BACKUPS_KEPT", 5, 1),
            hq_reconciliation_hour=_hour_of_day(env, "PIPELINE_HQ_RECONCILIATION_HOUR", 3),
            hq_reconciliation_lookback_days=_whole(
                env, "PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS", 2, 1
            ),
            hq_max_lag_minutes=_positive_number(env, "PIPELINE_HQ_MAX_LAG_MINUTES", 60.0),
            hq_mismatch_key_cap=_whole(env, "PIPELINE_HQ_MISMATCH_KEY_CAP", 100, 1),
            hq_null_rate_limits=_rate_limits(
                env, "PIPELINE_HQ_NULL_RATE_LIMITS", DEFAULT_HQ_NULL_RATE_LIMITS
            ),
        )

    def lake_path(self) -> UPath:
        """The lake root as a path that reads it: on object storage it carries the endpoint
        (credentials come from the environment's default chain, as for the lake IO manager)."""
        if self.lake_root.startswith("s3://") and self.s3_endpoint_url:
            return UPath(self.lake_root, endpoint_url=self.s3_endpoint_url)
        return UPath(self.lake_root)

    @property
    def workers_dir(self) -> Path:
        return self.data_root / SOURCE_WORKERS_DIR

    @property
    def gexbot_dir(self) -> Path:
        return self.data_root / SOURCE_GEXBOT_DIR

    @property
    def postgres_dir(self) -> Path:
        return self.data_root / SOURCE_POSTGRES_DIR

    @property
    def staging_dir(self) -> Path:
        return self.data_root / STAGING_DIR
