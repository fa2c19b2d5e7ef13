"""Exchange, symbol and filter normalization: every collector spelling maps to one canonical form."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.lib.market.symbols import (
    ASSET_ALIASES,
    KNOWN_BASES,
    KNOWN_QUOTES,
    SymbolError,
    normalize_asset_filter,
    normalize_exchange,
    normalize_exchange_filter,
    normalize_symbol,
)


def canonical(asset: str) -> str:
    return ASSET_ALIASES.get(asset, asset)


@pytest.mark.parametrize(
    ("exchange", "raw", "expected"),
    [
        ("Binance", "BTCUSDT", ("BTC-USDT", "BTC", "USDT")),
        ("binance", "ethusdt", ("ETH-USDT", "ETH", "USDT")),
        ("coinbase", "BTC-USD", ("BTC-USD", "BTC", "USD")),
        ("kraken", "btc/usdt", ("BTC-USDT", "BTC", "USDT")),
        ("okx", "BTC_USDT", ("BTC-USDT", "BTC", "USDT")),
        ("bitmex", "XBTUSD", ("BTC-USD", "BTC", "USD")),
        ("kraken", "XBT/EUR", ("BTC-EUR", "BTC", "EUR")),
        ("kraken", "ETHXBT", ("ETH-BTC", "ETH", "BTC")),
        ("Binance", "BTCFDUSD", ("BTC-FDUSD", "BTC", "FDUSD")),
        ("Binance", "ETHBUSD", ("ETH-BUSD", "ETH", "BUSD")),
        ("Binance", "BTCTUSD", ("BTC-TUSD", "BTC", "TUSD")),
        ("Binance", "ETHBTC", ("ETH-BTC", "ETH", "BTC")),
        ("Binance", "USDCUSDT", ("USDC-USDT", "USDC", "USDT")),
        ("Binance", "1INCHUSDT", ("1INCH-USDT", "1INCH", "USDT")),
        ("Binance", "NEWCOINUSDT", ("NEWCOIN-USDT", "NEWCOIN", "USDT")),
        ("kraken", "  sol/eur  ", ("SOL-EUR", "SOL", "EUR")),
    ],
)
def test_known_spellings_normalize(exchange: str, raw: str, expected: tuple[str, str, str]) -> None:
    assert normalize_symbol(exchange, raw) == expected


def test_known_base_breaks_a_suffix_tie() -> None:
    # DOTUSD ends in TUSD and in USD; DOT is a known base and DO is not.
    assert normalize_symbol("kraken", "DOTUSD") == ("DOT-USD", "DOT", "USD")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ETH-PERP",
        "BTC-USD-PERP",
        "BTC-",
        "/USDT",
        "BTC USDT",
        "BTC.USDT",
        "BTC",
        "USDT",
        "ABCXYZ",
        "BTC-BTC",
        "bıtusdt",
        "BTC-US$",
        "BTC/USD_T",
    ],
)
def test_unknown_forms_raise_naming_exchange_and_symbol(raw: str) -> None:
    with pytest.raises(SymbolError) as err:
        normalize_symbol("Binance", raw)
    message = str(err.value)
    assert repr(raw) in message
    assert "'Binance'" in message
    assert "expected" in message
    assert err.value.raw_symbol == raw
    assert err.value.exchange == "Binance"


def test_exchange_is_lowercase_and_stripped() -> None:
    assert normalize_exchange("  Binance ") == "binance"
    assert normalize_exchange("COINBASE") == "coinbase"
    with pytest.raises(SymbolError, match="non-empty"):
        normalize_exchange("  ")


def test_filters_are_normalized_deduplicated_and_sorted() -> None:
    assert normalize_asset_filter(["eth", " BTC", "btc", "xbt", ""]) == ["BTC", "ETH"]
    assert normalize_asset_filter("sol, eth,,") == ["ETH", "SOL"]
    assert normalize_asset_filter(None) == []
    assert normalize_exchange_filter(["Binance", "binance ", "Coinbase", " "]) == [
        "binance",
        "coinbase",
    ]
    assert normalize_exchange_filter("Kraken,binance") == ["binance", "kraken"]


def test_asset_filter_refuses_pairs() -> None:
    with pytest.raises(SymbolError, match="BTC-USDT"):
        normalize_asset_filter(["BTC-USDT"])


def _known_pairs() -> list[tuple[str, str]]:
    bases = sorted(set(KNOWN_BASES) | set(ASSET_ALIASES))
    return [
        (b, q) for b, q in itertools.product(bases, KNOWN_QUOTES) if canonical(b) != canonical(q)
    ]


def test_known_lists_have_no_ambiguous_concatenation() -> None:
    # Two known (base, quote) pairs that concatenate to the same text would make BASEQUOTE
    # ambiguous; the splitter could then only get one of them right.
    by_text: dict[str, set[tuple[str, str]]] = {}
    for base, quote in _known_pairs():
        by_text.setdefault(base + quote, set()).add((canonical(base), canonical(quote)))
    assert {text: pairs for text, pairs in by_text.items() if len(pairs) > 1} == {}


def _spellings(base: str, quote: str, case: str, pad: str) -> list[str]:
    forms = [f"{base}{quote}", f"{base}-{quote}", f"{base}/{quote}", f"{base}_{quote}"]
    transform = {"upper": str.upper, "lower": str.lower, "title": str.title}[case]
    return [f"{pad}{transform(form)}{pad}" for form in forms]


@given(
    pair=st.sampled_from(_known_pairs()),
    case=st.sampled_from(["upper", "lower", "title"]),
    pad=st.sampled_from(["", " ", "\t"]),
)
def test_every_spelling_of_a_known_pair_normalizes_alike(
    pair: tuple[str, str], case: str, pad: str
) -> None:
    base, quote = pair
    expected = (f"{canonical(base)}-{canonical(quote)}", canonical(base), canonical(quote))
    for raw in _spellings(base, quote, case, pad):
        assert normalize_symbol("AnyExchange", raw) == expected, raw


_ASSET_CODES = st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True).filter(
    lambda code: code not in {"PERP", "PERPETUAL", "SWAP", "FUTURES", "FUT"}
)


@given(base=_ASSET_CODES, quote=_ASSET_CODES, sep=st.sampled_from(["-", "/", "_"]))
def test_separated_forms_of_any_codes_round_trip(base: str, quote: str, sep: str) -> None:
    if canonical(base) == canonical(quote):
        return
    symbol, got_base, got_quote = normalize_symbol("x", f"{base.lower()}{sep}{quote}")
    assert (got_base, got_quote) == (canonical(base), canonical(quote))
    assert symbol == f"{got_base}-{got_quote}"


_FORBIDDEN = "!@#$%^&*()+=.,;:?<>[]{}|~`'\"\\ "
_junk_with_bad_char = st.builds(
    lambda head, bad, tail: f"{head}{bad}{tail}",
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6),
    st.sampled_from(_FORBIDDEN),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6),
)
_junk_without_quote = st.from_regex(r"[A-Z]{1,10}", fullmatch=True).filter(
    lambda text: not any(text.endswith(q) and len(text) > len(q) for q in KNOWN_QUOTES)
)
_junk_non_ascii = st.text(min_size=1, max_size=10).filter(lambda text: not text.isascii())


@given(raw=st.one_of(_junk_with_bad_char, _junk_without_quote, _junk_non_ascii))
def test_junk_raises_symbol_error_with_the_raw_symbol(raw: str) -> None:
    with pytest.raises(SymbolError) as err:
        normalize_symbol("SomeExchange", raw)
    assert repr(raw) in str(err.value)
    assert err.value.raw_symbol == raw
