"""Exchange and symbol normalization: the collectors' spellings to one canonical form.

Collectors store exchanges and symbols as each exchange spells them ('Binance' / 'BTCUSDT',
'coinbase' / 'BTC-USD', 'btc/usdt', 'XBTUSD'). Every layer after the source uses one form: the
exchange in lowercase, base and quote assets in uppercase, and the symbol as `BASE-QUOTE`
(`BTC-USDT`). The staging contract's filters use the same forms, so they are normalized here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Quote assets recognised at the end of a concatenated symbol (`BTCUSDT`). Matching tries the
# longest suffix first, so `BTCBUSD` is BTC-BUSD and not BTCB-USD.
KNOWN_QUOTES: tuple[str, ...] = (
    "FDUSD",
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "USDP",
    "DAI",
    "USD",
    "EUR",
    "GBP",
    "JPY",
    "AUD",
    "CAD",
    "CHF",
    "TRY",
    "BRL",
    "BTC",
    "XBT",
    "ETH",
    "BNB",
)

# Base assets the splitter knows. They only break ties: `DOTUSD` ends in both TUSD and USD, and
# DOT-USD is chosen over DO-TUSD because DOT is a known base and DO is not. An unknown base still
# normalizes (`NEWCOINUSDT` is NEWCOIN-USDT).
KNOWN_BASES: tuple[str, ...] = (
    "BTC",
    "ETH",
    "SOL",
    "XRP",
    "ADA",
    "DOGE",
    "DOT",
    "LTC",
    "LINK",
    "BNB",
    "AVAX",
    "MATIC",
    "TRX",
    "BCH",
    "ATOM",
    "UNI",
    "SHIB",
    "PEPE",
    "ARB",
    "OP",
    "NEAR",
    "FIL",
    "APT",
    "SUI",
    "TON",
    "XLM",
    "ETC",
    "AAVE",
    "USDT",
    "USDC",
    "EUR",
)

# Exchange-specific asset codes mapped to the common code (BitMEX and Kraken say XBT for BTC).
ASSET_ALIASES: dict[str, str] = {"XBT": "BTC"}

SEPARATORS = ("-", "/", "_")

# Suffixes of derivative instruments; a separated symbol ending in one of them is not a spot pair.
_NOT_QUOTES = frozenset({"PERP", "PERPETUAL", "SWAP", "FUTURES", "FUT"})

_QUOTES_LONGEST_FIRST = tuple(sorted(set(KNOWN_QUOTES), key=lambda q: (-len(q), q)))
_KNOWN_BASES = frozenset(ASSET_ALIASES.get(b, b) for b in KNOWN_BASES)
_ASSET_RE = re.compile(r"[A-Z0-9]*[A-Z][A-Z0-9]*", re.ASCII)
_EXPECTED_FORMS = (
    "expected BASE-QUOTE, BASE/QUOTE, BASE_QUOTE (letters and digits, any case) or a "
    "concatenated BASEQUOTE ending in a known quote asset ("
    + ", ".join(_QUOTES_LONGEST_FIRST)
    + ")"
)


class SymbolError(ValueError):
    """An exchange or symbol spelling that cannot be normalized.

    `exchange` and `raw_symbol` hold the values as given, so a caller can report the offending row.
    """

    def __init__(self, message: str, *, exchange: str = "", raw_symbol: str = ""):
        super().__init__(message)
        self.exchange = exchange
        self.raw_symbol = raw_symbol


def normalize_exchange(raw: str) -> str:
    """The exchange name as every layer after the source spells it: stripped and lowercase."""
    if not isinstance(raw, str):
        raise SymbolError(f"exchange {raw!r}: expected text, got {type(raw).__name__}")
    exchange = raw.strip().lower()
    if not exchange:
        raise SymbolError(f"exchange {raw!r}: expected a non-empty exchange name")
    return exchange


def _canonical_asset(code: str) -> str:
    return ASSET_ALIASES.get(code, code)


def normalize_symbol(exchange: str, raw_symbol: str) -> tuple[str, str, str]:
    """Normalize an exchange-native symbol to (`BASE-QUOTE`, base, quote), all uppercase.

    Accepted spellings: `BTC-USD`, `btc/usdt`, `BTC_USDT` (one separator, two parts) and the
    concatenated `BTCUSDT`, split on the longest known quote suffix that leaves a known base (or,
    failing that, the longest known quote suffix at all). `XBT` becomes `BTC`. Anything else,
    including derivatives such as `ETH-PERP`, raises `SymbolError` naming the exchange, the raw
    symbol and the accepted forms.
    """

    def fail(why: str) -> SymbolError:
        return SymbolError(
            f"exchange {exchange!r}, symbol {raw_symbol!r}: {why}; {_EXPECTED_FORMS}",
            exchange=exchange,
            raw_symbol=raw_symbol,
        )

    if not isinstance(raw_symbol, str):
        raise fail(f"expected text, got {type(raw_symbol).__name__}")
    text = raw_symbol.strip()
    if not text:
        raise fail("the symbol is empty")
    if not text.isascii():
        raise fail("the symbol has non-ASCII characters")
    text = text.upper()

    separators = [sep for sep in SEPARATORS if sep in text]
    if separators:
        if len(separators) > 1 or text.count(separators[0]) != 1:
            raise fail("expected exactly one separator between base and quote")
        base, quote = text.split(separators[0])
        for part, name in ((base, "base"), (quote, "quote")):
            if not _ASSET_RE.fullmatch(part):
                raise fail(f"the {name} asset {part!r} is not letters and digits")
        if quote in _NOT_QUOTES:
            raise fail(f"{quote!r} is a derivative suffix, not a quote asset")
    else:
        if not _ASSET_RE.fullmatch(text):
            raise fail("the symbol has characters other than letters, digits and one separator")
        split = _split_concatenated(text)
        if split is None:
            raise fail("no known quote asset ends the concatenated symbol")
        base, quote = split

    base, quote = _canonical_asset(base), _canonical_asset(quote)
    if base == quote:
        raise fail(f"base and quote are the same asset {base!r}")
    return f"{base}-{quote}", base, quote


def _split_concatenated(text: str) -> tuple[str, str] | None:
    candidates = [
        (text[: -len(quote)], quote)
        for quote in _QUOTES_LONGEST_FIRST
        if text.endswith(quote)
        and len(text) > len(quote)
        and _ASSET_RE.fullmatch(text[: -len(quote)])
    ]
    for base, quote in candidates:
        if _canonical_asset(base) in _KNOWN_BASES:
            return base, quote
    return candidates[0] if candidates else None


def _as_list(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        # A single string is a comma-separated list, as a command line or an env var gives it.
        return values.split(",")
    return list(values)


def normalize_asset_filter(values: Iterable[str] | str | None) -> list[str]:
    """Base-asset filters in canonical form: uppercase, aliases resolved, deduplicated, sorted.

    A string is read as a comma-separated list; blank entries are ignored. An entry that is not an
    asset code (letters and digits) raises `SymbolError`, so a typo does not silently match nothing.
    """
    assets: set[str] = set()
    for value in _as_list(values):
        if not isinstance(value, str):
            raise SymbolError(f"asset filter {value!r}: expected text, got {type(value).__name__}")
        code = value.strip().upper()
        if not code:
            continue
        if not code.isascii() or not _ASSET_RE.fullmatch(code):
            raise SymbolError(
                f"asset filter {value!r}: expected a base asset code of letters and digits "
                "such as BTC (not a pair such as BTC-USDT)"
            )
        assets.add(_canonical_asset(code))
    return sorted(assets)


def normalize_exchange_filter(values: Iterable[str] | str | None) -> list[str]:
    """Exchange filters in canonical form: lowercase, stripped, deduplicated, sorted.

    A string is read as a comma-separated list; blank entries are ignored.
    """
    exchanges: set[str] = set()
    for value in _as_list(values):
        if isinstance(value, str) and not value.strip():
            continue
        exchanges.add(normalize_exchange(value))
    return sorted(exchanges)
