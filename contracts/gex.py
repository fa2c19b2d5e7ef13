"""GEX contract: the rows of the canonical Parquet files the GEX import writes (`gex_strikes`).

A staged gexbot file holds one record (a snapshot) or a list of them (a day's history). Each
strike of a snapshot becomes one row and the snapshot's own fields repeat on each of its rows,
except `max_priors` (a list of pairs), which is kept once, on the snapshot's first row
(`strike_index` 0, or -1 without strikes); a snapshot without strikes (the `/majors` and
`/maxchange` endpoints, or an empty chain) is one row with the strike columns null. Every field of
the source is kept: the known ones as typed columns, any other as JSON text in `extra_fields`, so
nothing is dropped.

Version 2.0.0: `max_priors` moved from every row of a snapshot to its first row (1.0.0 repeated
it on every strike; files written then still read the same way with `strike_index <= 0`).

Files: `parquet/gex/YYYY/MM/<ticker>/<endpoint>/strikes_job<id>.parquet`, one immutable file per
import job and month of its snapshots.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from pydantic import Field

from contracts.core import ContractInfo, ContractModel


def _num(name: str, what: str) -> Any:
    return Field(None, description=f"{what} Source field `{name}`; null when absent or null.")


class GexStrikeRow(ContractModel):
    """One strike of one GEX snapshot, with the snapshot's fields."""

    contract: ClassVar[ContractInfo] = ContractInfo(
        name="gex_strikes",
        version="2.0.0",
        title="GEX strikes",
        description=(
            "Canonical rows of the GEX import: one per strike of each gexbot snapshot (one per "
            "snapshot without strikes), every source field kept."
        ),
        write_semantics="append",
        primary_key=("job_id", "record_index", "strike_index"),
    )

    job_id: int = Field(
        ..., description="The import job (`import_jobs.id` in gex_history.db) that wrote the row."
    )
    endpoint: str = Field(
        ..., description="The gexbot endpoint the job named (`gex_zero`, `gex_full_majors`, ...)."
    )
    record_index: int = Field(
        ..., description="Position of the snapshot in the staged file (0 for a single record)."
    )
    strike_index: int = Field(
        ...,
        description="Position of the strike in the snapshot's `strikes` list; -1 for a snapshot without strikes.",
    )
    ticker: str = Field(..., description="Source field `ticker` (`SPX`, `NQ_NDX`).")
    timestamp: float = Field(..., description="Source field `timestamp`: Unix seconds, as sent.")
    snapshot_ts_utc: dt.datetime = Field(
        ..., description="`timestamp` as a UTC time (microseconds)."
    )
    spot: float | None = _num("spot", "Spot price of the underlying.")
    zero_gamma: float | None = _num("zero_gamma", "Price at which total gamma exposure is zero.")
    min_dte: int | None = _num("min_dte", "Days to expiry of the nearest expiry included.")
    sec_min_dte: int | None = _num("sec_min_dte", "Days to expiry of the second nearest expiry.")
    major_pos_vol: float | None = _num(
        "major_pos_vol", "Strike of the largest positive GEX by volume."
    )
    major_pos_oi: float | None = _num(
        "major_pos_oi", "Strike of the largest positive GEX by open interest."
    )
    major_neg_vol: float | None = _num(
        "major_neg_vol", "Strike of the largest negative GEX by volume."
    )
    major_neg_oi: float | None = _num(
        "major_neg_oi", "Strike of the largest negative GEX by open interest."
    )
    sum_gex_vol: float | None = _num("sum_gex_vol", "Net GEX by volume over all strikes.")
    sum_gex_oi: float | None = _num("sum_gex_oi", "Net GEX by open interest over all strikes.")
    delta_risk_reversal: float | None = _num("delta_risk_reversal", "Delta risk reversal.")
    max_priors: list[list[float]] | None = Field(
        None,
        description=(
            "Source field `max_priors`: `[strike, value]` pairs of the largest prior changes. Kept "
            "once per snapshot, on its first row (`strike_index` 0, or -1 without strikes); null on "
            "its other rows."
        ),
    )
    mpos_vol: float | None = _num("mpos_vol", "Majors: largest positive GEX strike by volume.")
    mpos_oi: float | None = _num("mpos_oi", "Majors: largest positive GEX strike by open interest.")
    mneg_vol: float | None = _num("mneg_vol", "Majors: largest negative GEX strike by volume.")
    mneg_oi: float | None = _num("mneg_oi", "Majors: largest negative GEX strike by open interest.")
    net_gex_vol: float | None = _num("net_gex_vol", "Majors: net GEX by volume.")
    net_gex_oi: float | None = _num("net_gex_oi", "Majors: net GEX by open interest.")
    current: list[float] | None = Field(
        None, description="Maxchange: source field `current`, a `[strike, change]` pair."
    )
    one: list[float] | None = Field(
        None, description="Maxchange: source field `one` (1-minute window), `[strike, change]`."
    )
    five: list[float] | None = Field(
        None, description="Maxchange: source field `five` (5 minutes), `[strike, change]`."
    )
    ten: list[float] | None = Field(
        None, description="Maxchange: source field `ten` (10 minutes), `[strike, change]`."
    )
    fifteen: list[float] | None = Field(
        None, description="Maxchange: source field `fifteen` (15 minutes), `[strike, change]`."
    )
    thirty: list[float] | None = Field(
        None, description="Maxchange: source field `thirty` (30 minutes), `[strike, change]`."
    )
    strike: float | None = Field(
        None, description="`strikes[i][0]`: the strike price; null for a snapshot without strikes."
    )
    gex_vol: float | None = Field(None, description="`strikes[i][1]`: GEX at the strike by volume.")
    gex_oi: float | None = Field(
        None, description="`strikes[i][2]`: GEX at the strike by open interest."
    )
    priors: list[float] | None = Field(
        None,
        description="`strikes[i][3]`: the strike's prior GEX values (null when the item has three elements).",
    )
    extra_fields: dict[str, Any] | None = Field(
        None,
        description=(
            "Every other top-level field of the snapshot, as JSON text with sorted keys (null when "
            "there are none): what the known columns do not cover is kept here, not dropped."
        ),
    )


CONTRACTS: tuple[type[ContractModel], ...] = (GexStrikeRow,)
