"""The sampler: a few records drawn from a large file in one streaming pass, with a custody sidecar.

Inputs are JSON arrays (the EDSM dump layout, one record per line with a comma after each, read
line by line; any other array through a streaming scanner), JSON Lines or CSV, each plain or
compressed (gzip, bz2 or zstd, told from the file's first bytes, never from its name). Memory
holds the records kept and one record being read, never the file: a multi-GB dump is sampled in
bounded memory. By default every record is parsed, so a broken record anywhere in the input is
an error naming the file and the byte offset (of the decompressed stream) where it breaks;
without validation, one-record-per-line JSON is only split into lines and the records kept are
parsed (several times faster, and a broken record that is not kept goes unnoticed).

Regimes:

- `head`: the first N records (reading stops there);
- `random`: N records chosen uniformly by reservoir sampling (Li's Algorithm L) with a seed; the
  same seed over the same input gives the same sample; records keep their input order;
- `systematic`: every k-th record from a start in `[0, k)` (random from the seed, 0 without one);
  without an explicit step, a first pass counts the records and k = max(1, count // N).

The sample is written in the input's format (a JSON array in the one-record-per-line layout,
JSON Lines, or CSV with the header), uncompressed, atomically, with a `SampleMetadata` sidecar
naming the input as its parent. No Dagster imports: the CLI and any asset call the same code.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import enum
import gzip
import io
import json
import math
import os
import random
import re
import secrets
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pyarrow as pa
from upath import UPath

from contracts.custody import CompressionType, ParentRef, SampleMetadata
from pipeline_assets.lib.custody import MetadataFactory, relative_to_root, write_sidecar
from pipeline_assets.lib.download import detect_compression
from pipeline_assets.lib.files import as_upath, atomic_write, sha256_file
from pipeline_assets.lib.versions import CODE_VERSION

SAMPLER_VERSION = "1.0"
READ_CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 1 << 16
DECODE_PIECE_BYTES = 1 << 16
DEFAULT_MAX_RECORD_BYTES = 256 << 20
SAMPLES_DIR = "samples"

_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".bz2", ".zst", ".zstd")


class SampleError(ValueError):
    """The input cannot be sampled: names the file, and the byte offset or line where known."""


class Regime(str, enum.Enum):
    HEAD = "head"
    RANDOM = "random"
    SYSTEMATIC = "systematic"


class Format(str, enum.Enum):
    JSON_ARRAY = "json"
    JSON_LINES = "jsonl"
    CSV = "csv"


class Record(NamedTuple):
    """One record of the input: its position, where it starts (a byte offset in the decompressed
    input: of its line, for one-record-per-line JSON; for CSV the line number), and its value."""

    index: int
    offset: int
    value: Any


# --- compression ---------------------------------------------------------------------------


class _DecodedStream(io.RawIOBase):
    """Decompressed bytes of a raw file; a corrupt or truncated stream becomes a SampleError
    naming the file and how far it got."""

    def __init__(self, raw: BinaryIO, inner: Any, name: str, compression: CompressionType):
        super().__init__()
        self._raw, self._inner, self._name, self._compression = raw, inner, name, compression
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            # In pieces, so that an error can say how far decompression got.
            data = self._inner.read(min(len(buffer), DECODE_PIECE_BYTES))
        except (EOFError, OSError, zlib.error, pa.ArrowException) as exc:
            where = f"after {self.position:,} decompressed bytes"
            try:
                where += f", at compressed offset {self._raw.tell():,}"
            except (OSError, ValueError):
                pass
            kind = "truncated" if isinstance(exc, EOFError) else "corrupt"
            raise SampleError(
                f"{self._name}: {kind} {self._compression.value} stream {where} ({exc})"
            ) from exc
        n = len(data)
        buffer[:n] = data
        self.position += n
        return n

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
            self._raw.close()
        finally:
            super().close()


def open_decompressed(raw: BinaryIO, name: str) -> tuple[BinaryIO, CompressionType]:
    """A buffered stream of the file's content, decompressed as its first bytes say."""
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw, READ_CHUNK_BYTES)  # type: ignore[arg-type]
    head = raw.peek(4)[:4]
    compression = detect_compression(head)
    inner: Any
    if compression is CompressionType.GZIP:
        inner = gzip.GzipFile(fileobj=raw, mode="rb")
    elif compression is CompressionType.BZIP2:
        inner = bz2.BZ2File(raw, mode="rb")
    elif compression is CompressionType.ZSTD:
        inner = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
    else:
        return raw, compression
    return io.BufferedReader(
        _DecodedStream(raw, inner, name, compression), READ_CHUNK_BYTES
    ), compression


Opener = Callable[[], BinaryIO]


def file_opener(path: str | os.PathLike[str] | UPath) -> Opener:
    upath = as_upath(path)

    def opener() -> BinaryIO:
        try:
            return upath.open("rb")
        except FileNotFoundError as exc:
            raise SampleError(f"{upath}: no such file") from exc

    return opener


# --- formats -------------------------------------------------------------------------------


def _strip_compression_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(head: bytes, name: str = "") -> Format:
    """The format from the file name (`.csv`, `.jsonl`/`.ndjson`) or else the first character:
    `[` a JSON array, `{` JSON Lines, anything else CSV."""
    base = _strip_compression_suffix(name).lower()
    if base.endswith(".csv"):
        return Format.CSV
    if base.endswith((".jsonl", ".ndjson")):
        return Format.JSON_LINES
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"[":
        return Format.JSON_ARRAY
    if first == b"{":
        return Format.JSON_LINES
    if base.endswith(".json"):
        raise SampleError(
            f"{name}: a JSON file must hold an array or JSON Lines; it starts with {first!r}"
        )
    return Format.CSV


_decode_value = json.JSONDecoder().raw_decode
_WS = " \t\r\n"


def _loads(raw: bytes, name: str, offset: int, where: str = "") -> Any:
    """Parse one whole JSON value; an error names the byte offset in the input."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleError(f"{name}: not UTF-8 at byte {offset + exc.start:,}{where}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = offset + len(text[: exc.pos].encode("utf-8"))
        raise SampleError(f"{name}: invalid JSON at byte {at:,}{where}: {exc.msg}") from exc


class Unparsed(bytes):
    """A record's line as read, parsed only if the record is kept (sampling without
    validation)."""


def parse_kept(record: Record, name: str) -> Record:
    """The record with its value parsed, if it was read without parsing."""
    if not isinstance(record.value, Unparsed):
        return record
    line = bytes(record.value)
    body = line.strip()
    body = body[:-1] if body.endswith(b",") else body
    start = record.offset + len(line) - len(line.lstrip())
    return record._replace(value=_loads(body, name, start))


def _iter_json_lines(stream: BinaryIO, name: str, validate: bool = True) -> Iterator[Record]:
    offset = 0
    index = 0
    for line_no, line in enumerate(stream, start=1):
        stripped = line.strip()
        if stripped and not validate:
            yield Record(index, offset, Unparsed(line))
            index += 1
        elif stripped:
            where = f" (line {line_no}; JSON Lines holds one whole JSON value per line)"
            start = offset + (len(line) - len(line.lstrip()))
            yield Record(index, offset, _loads(stripped, name, start, where))
            index += 1
        offset += len(line)


class _LayoutChanged(Exception):
    """A line of a line-per-record array is not one record: read it with the scanner."""


_CLOSING = {b"{": b"}", b"[": b"]"}


def _iter_array_lines(stream: BinaryIO, name: str, validate: bool = True) -> Iterator[Record]:
    """The EDSM layout: `[`, one record per line followed by a comma, `]`. A record's offset is
    where its line starts. Without validation a line is taken as a record when it is an object
    or array by its first and last characters, and parsed only if it is kept."""
    offset = 0
    index = 0
    closed = False
    for line_no, line in enumerate(stream, start=1):
        start = offset
        offset += len(line)
        stripped = line.strip()
        if line_no == 1:
            if stripped.lstrip(b"\xef\xbb\xbf") != b"[":
                raise _LayoutChanged
            continue
        if not stripped:
            continue
        if closed:
            raise SampleError(
                f"{name}: data after the end of the array at byte {start:,} (line {line_no})"
            )
        if stripped == b"]":
            closed = True
            continue
        if not validate:
            body = stripped[:-1] if stripped.endswith(b",") else stripped
            if _CLOSING.get(body[:1]) != body[-1:]:
                raise _LayoutChanged
            yield Record(index, start, Unparsed(line))
            index += 1
            continue
        try:
            body = (stripped[:-1] if stripped.endswith(b",") else stripped).decode("utf-8")
            value, end = _decode_value(body)
        except (ValueError, UnicodeDecodeError):
            raise _LayoutChanged from None
        if end != len(body):
            raise _LayoutChanged
        yield Record(index, start, value)
        index += 1
    if not closed:
        raise SampleError(
            f"{name}: the JSON array is not closed: the input ends at byte {offset:,} (truncated?)"
        )


# A whole string, or a structural character; a lone quote is a string the buffer cuts off.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},"]', re.DOTALL)


def _element_complete(text: str, pos: int) -> bool:
    """Whether the element starting at `pos` ends inside `text` (a comma or bracket closes it at
    its own level); False when the text stops first."""
    depth = 0
    for m in _TOKEN.finditer(text, pos):
        token = m.group()
        if token == '"':
            return False
        if token in "[{":
            depth += 1
        elif token in "]}":
            if depth == 0:
                return True
            depth -= 1
        elif token == "," and depth == 0:
            return True
    return False


class _TextBuffer:
    """Decoded text of a byte stream, read in chunks, with byte offsets for messages."""

    def __init__(self, stream: BinaryIO, name: str, max_record_bytes: int):
        self.stream, self.name, self.max_record_bytes = stream, name, max_record_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.eof = False
        # A position in the text and its byte offset in the input: offsets are counted from the
        # nearest mark, so that asking for each record's offset costs its length, not the buffer's.
        self._mark_pos = 0
        self._mark_bytes = 0

    def byte_offset(self, pos: int) -> int:
        if pos >= self._mark_pos:
            self._mark_bytes += len(self.text[self._mark_pos : pos].encode("utf-8"))
            self._mark_pos = pos
            return self._mark_bytes
        return self._mark_bytes - len(self.text[pos : self._mark_pos].encode("utf-8"))

    def refill(self, keep_from: int) -> int:
        """Drop text[:keep_from] and read more; returns how many characters were dropped."""
        pending = len(self.text) - keep_from
        if pending > self.max_record_bytes:
            raise SampleError(
                f"{self.name}: the record starting at byte {self.byte_offset(keep_from):,} is longer than "
                f"{self.max_record_bytes:,} bytes (an unclosed string or bracket?)"
            )
        base = self.byte_offset(keep_from)
        chunk = self.stream.read(max(READ_CHUNK_BYTES, pending))
        self.eof = not chunk
        try:
            decoded = self.decoder.decode(chunk, final=self.eof)
        except UnicodeDecodeError as exc:
            at = base + len(self.text[keep_from:].encode("utf-8")) + exc.start
            raise SampleError(f"{self.name}: not UTF-8 near byte {at:,}") from exc
        self.text = self.text[keep_from:] + decoded
        self._mark_pos, self._mark_bytes = 0, base
        return keep_from

    def skip_ws(self, pos: int) -> int:
        """Position of the next non-whitespace character, reading more as needed (len(text) at
        the end of the input); may refill, so positions before `pos` are lost."""
        while True:
            n = len(self.text)
            while pos < n and self.text[pos] in _WS:
                pos += 1
            if pos < n or self.eof:
                return pos
            pos -= self.refill(pos)


def _iter_array_scan(
    stream: BinaryIO, name: str, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[Record]:
    """Any JSON array, however it is laid out. Each element is parsed by the C JSON decoder
    straight from the buffer; when that fails, a token scan tells an element cut off by the end
    of the buffer (read more) from a broken one (an error naming its byte offset)."""
    buf = _TextBuffer(stream, name, max_record_bytes)
    pos = buf.skip_ws(0)
    if buf.text[pos : pos + 1] == "\ufeff":
        pos = buf.skip_ws(pos + 1)
    if buf.text[pos : pos + 1] != "[":
        found = buf.text[pos : pos + 1] or "the end of the input"
        raise SampleError(
            f"{name}: expected a JSON array at byte {buf.byte_offset(pos):,}, found {found!r}"
        )
    pos += 1
    index = 0
    while True:
        pos = buf.skip_ws(pos)
        if pos >= len(buf.text):
            raise SampleError(
                f"{name}: the JSON array is not closed: the end of the input at byte {buf.byte_offset(pos):,} (truncated?)"
            )
        char = buf.text[pos]
        if char == "]":  # the end (also after a trailing comma, as some dump writers leave one)
            pos += 1
            break
        if char == ",":
            raise SampleError(
                f"{name}: missing array element before the comma at byte {buf.byte_offset(pos):,}"
            )
        try:
            value, end = _decode_value(buf.text, pos)
            error = None
        except json.JSONDecodeError as exc:
            end, error = len(buf.text), exc
        # An element reaching the end of the buffer (a number may go on), or failing before a
        # complete element is in the buffer: read more and parse it again.
        if (
            end >= len(buf.text)
            and not buf.eof
            and (error is None or not _element_complete(buf.text, pos))
        ):
            pos -= buf.refill(pos)
            continue
        if error is not None:
            if not buf.eof or _element_complete(buf.text, pos):
                raise SampleError(
                    f"{name}: invalid JSON at byte {buf.byte_offset(error.pos):,}: {error.msg}"
                )
            raise SampleError(
                f"{name}: the JSON array is not closed: the element at byte {buf.byte_offset(pos):,} "
                f"is cut off by the end of the input (truncated?)"
            )
        yield Record(index, buf.byte_offset(pos), value)
        index += 1
        pos = buf.skip_ws(end)
        if pos >= len(buf.text):
            raise SampleError(
                f"{name}: the JSON array is not closed: the end of the input at byte {buf.byte_offset(pos):,} (truncated?)"
            )
        char = buf.text[pos]
        if char == ",":
            pos += 1
        elif char != "]":
            raise SampleError(
                f"{name}: expected ',' or ']' at byte {buf.byte_offset(pos):,}, found {char!r}"
            )
    pos = buf.skip_ws(pos)
    if pos < len(buf.text):
        raise SampleError(
            f"{name}: data after the end of the array at byte {buf.byte_offset(pos):,}"
        )


def _iter_json_array(
    opener: Callable[[], BinaryIO], name: str, validate: bool = True
) -> Iterator[Record]:
    """The line-per-record fast path, falling back to the scanner (reading again from the start
    and skipping the records already given) when a line is not one whole record."""
    given = 0
    with opener() as stream:
        try:
            for record in _iter_array_lines(stream, name, validate):
                yield record
                given += 1
            return
        except _LayoutChanged:
            pass
    with opener() as stream:
        for record in _iter_array_scan(stream, name):
            if record.index >= given:
                yield record


def _iter_csv(stream: BinaryIO, name: str) -> tuple[list[str], Iterator[Record]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SampleError(f"{name}: line 1: not readable as CSV ({exc})") from exc
    if not header:
        raise SampleError(f"{name}: empty input, expected a CSV header line")

    def rows() -> Iterator[Record]:
        index = 0
        while True:
            try:
                row = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise SampleError(
                    f"{name}: line {reader.line_num + 1}: not readable as CSV ({exc})"
                ) from exc
            if row is None:
                return
            if not row:
                continue
            if len(row) != len(header):
                raise SampleError(
                    f"{name}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                )
            yield Record(index, reader.line_num, row)
            index += 1

    return header, rows()


@dataclass
class Source:
    """An input to sample: how to open its raw bytes, and what it is."""

    opener: Opener
    name: str
    format: Format
    compression: CompressionType

    @classmethod
    def open_path(cls, path: str | os.PathLike[str] | UPath, fmt: Format | None = None) -> Source:
        return cls.from_opener(file_opener(path), str(path), fmt)

    @classmethod
    def from_opener(cls, opener: Opener, name: str, fmt: Format | None = None) -> Source:
        stream, compression = open_decompressed(opener(), name)
        with stream:
            head = stream.read(SNIFF_BYTES)
        return cls(opener, name, fmt or detect_format(head, name), compression)

    def decoded(self) -> BinaryIO:
        return open_decompressed(self.opener(), self.name)[0]

    def records(self, validate: bool = True) -> tuple[list[str] | None, Iterator[Record]]:
        """The CSV header (None for JSON) and a one-pass iterator over the records. Without
        validation, records of line-per-record JSON come as `Unparsed` lines (see `parse_kept`)."""
        if self.format is Format.JSON_ARRAY:
            return None, _iter_json_array(self.decoded, self.name, validate)
        if self.format is Format.JSON_LINES:
            return None, _closing(
                self.decoded(), lambda s: _iter_json_lines(s, self.name, validate)
            )
        stream = self.decoded()
        header, rows = _iter_csv(stream, self.name)
        return header, _closing(stream, lambda _s: rows)


def _closing(stream: BinaryIO, make: Callable[[BinaryIO], Iterator[Record]]) -> Iterator[Record]:
    with stream:
        yield from make(stream)


# --- strategies ----------------------------------------------------------------------------


@dataclass
class Selection:
    records: list[Record]
    source_offset: int | None
    records_read: int | None
    params: dict[str, Any] = field(default_factory=dict)


class HeadStrategy:
    """The first N records."""

    def __init__(self, rows: int):
        self.rows = rows

    def select(self, records: Iterator[Record]) -> Selection:
        kept: list[Record] = []
        if self.rows > 0:
            for record in records:
                kept.append(record)
                if len(kept) == self.rows:
                    break
        return Selection(kept, 0, None)


class ReservoirStrategy:
    """N records uniformly at random in one pass (Algorithm L: random draws only at the records
    that enter the reservoir, so the cost is reading, not drawing)."""

    def __init__(self, rows: int, seed: int):
        self.rows, self.seed = rows, seed

    def select(self, records: Iterator[Record]) -> Selection:
        k = self.rows
        rng = random.Random(self.seed)
        reservoir: list[Record] = []
        seen = 0
        if k == 0:
            for _ in records:
                seen += 1
            return Selection([], None, seen)

        def uniform() -> float:
            u = rng.random()
            while u == 0.0:
                u = rng.random()
            return u

        def skip_after(w: float) -> int:
            if w >= 1.0:
                return 0
            if w <= 0.0:
                return sys.maxsize
            return int(math.log(uniform()) / math.log1p(-w))

        w = math.exp(math.log(uniform()) / k)
        next_index = k + skip_after(w)
        for record in records:
            seen += 1
            if record.index < k:
                reservoir.append(record)
            elif record.index == next_index:
                reservoir[rng.randrange(k)] = record
                w *= math.exp(math.log(uniform()) / k)
                next_index += 1 + skip_after(w)
        reservoir.sort(key=lambda r: r.index)
        first = reservoir[0].index if reservoir else None
        return Selection(reservoir, first, seen)


class SystematicStrategy:
    """Every `step`-th record from `start`, N records at most."""

    def __init__(self, rows: int, step: int, start: int):
        if step < 1 or not 0 <= start < step:
            raise SampleError(
                f"systematic sampling needs step >= 1 and 0 <= start < step, got step={step}, start={start}"
            )
        self.rows, self.step, self.start = rows, step, start

    def select(self, records: Iterator[Record]) -> Selection:
        kept: list[Record] = []
        if self.rows > 0:
            for record in records:
                if record.index >= self.start and (record.index - self.start) % self.step == 0:
                    kept.append(record)
                    if len(kept) == self.rows:
                        break
        return Selection(kept, self.start, None, {"step": self.step, "start": self.start})


def count_records(source: Source, validate: bool = True) -> int:
    _, records = source.records(validate)
    return sum(1 for _ in records)


@dataclass
class Sample:
    """What a regime chose from a source."""

    source: Source
    regime: Regime
    strategy_used: str
    header: list[str] | None
    selection: Selection
    seed: int | None


def draw(
    source: Source,
    regime: Regime | str,
    rows: int,
    *,
    seed: int | None = None,
    step: int | None = None,
    validate: bool = True,
) -> Sample:
    """Choose `rows` records of the source by the regime (no writing).

    With `validate` (the default) every record read is parsed, so a broken one anywhere is an
    error; without it, JSON whose records are one per line is only split into lines, and only
    the records kept are parsed (several times faster; a broken record that is not kept goes
    unnoticed).
    """
    regime = Regime(regime)
    if rows < 0:
        raise SampleError(f"rows must be 0 or more, got {rows}")
    strategy: HeadStrategy | ReservoirStrategy | SystematicStrategy
    if regime is Regime.HEAD:
        strategy, seed = HeadStrategy(rows), None
    elif regime is Regime.RANDOM:
        seed = secrets.randbelow(2**32) if seed is None else seed
        strategy = ReservoirStrategy(rows, seed)
    else:
        if step is None:
            total = count_records(source, validate)
            step = max(1, total // rows) if rows else 1
        start = random.Random(seed).randrange(step) if seed is not None else 0
        strategy = SystematicStrategy(rows, step, start)
    header, records = source.records(validate)
    try:
        selection = strategy.select(records)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    selection.records = [parse_kept(r, source.name) for r in selection.records]
    return Sample(source, regime, type(strategy).__name__, header, selection, seed)


# --- writing -------------------------------------------------------------------------------

_EXTENSIONS = {Format.JSON_ARRAY: ".json", Format.JSON_LINES: ".jsonl", Format.CSV: ".csv"}


def encode_sample(
    fmt: Format, header: Sequence[str] | None, records: Sequence[Record]
) -> Iterator[bytes]:
    """The sample's bytes: a JSON array one record per line, JSON Lines, or CSV with its header."""
    if fmt is Format.CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header or [])
        for record in records:
            writer.writerow(record.value)
        yield out.getvalue().encode()
        return
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode
    if fmt is Format.JSON_LINES:
        for record in records:
            yield (dumps(record.value) + "\n").encode()
        return
    yield b"[\n"
    for i, record in enumerate(records):
        yield ("    " + dumps(record.value) + (",\n" if i < len(records) - 1 else "\n")).encode()
    yield b"]\n"


def default_sample_path(source: UPath, root: UPath, sample: Sample, fmt: Format) -> UPath:
    """`<root>/samples/[<source folder under the root>/]<stem>.<regime>-<rows>[-seed<S>|-step<K>].<ext>`."""
    stem = _strip_compression_suffix(source.name)
    for ext in (".json", ".jsonl", ".ndjson", ".csv"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    tag = f"{sample.regime.value}-{len(sample.selection.records)}"
    if sample.regime is Regime.RANDOM:
        tag += f"-seed{sample.seed}"
    elif sample.regime is Regime.SYSTEMATIC:
        tag += f"-step{sample.selection.params['step']}-start{sample.selection.params['start']}"
    folder = root / SAMPLES_DIR
    if _is_under(source.parent, root):
        relative = relative_to_root(source.parent, root)
        # A sample of a sample stays beside its parent rather than in samples/samples/.
        folder = (
            root.joinpath(*relative.split("/"))
            if relative.split("/")[0] == SAMPLES_DIR
            else folder.joinpath(*relative.split("/"))
        )
    elif str(source.parent) == str(root):
        folder = root / SAMPLES_DIR
    return folder / f"{stem}.{tag}{_EXTENSIONS[fmt]}"


@dataclass(frozen=True)
class SampleArtifact:
    sample_path: UPath
    sidecar_path: UPath
    metadata: SampleMetadata


def _is_under(path: UPath, root: UPath) -> bool:
    try:
        relative_to_root(path, root)
    except Exception:  # noqa: BLE001
        return False
    return True


def sample_file(
    source_path: str | os.PathLike[str] | UPath,
    *,
    regime: Regime | str,
    rows: int,
    root: str | os.PathLike[str] | UPath,
    seed: int | None = None,
    step: int | None = None,
    out: str | os.PathLike[str] | UPath | None = None,
    fmt: Format | None = None,
    validate: bool = True,
    code_version: str = CODE_VERSION,
) -> SampleArtifact:
    """Sample a file and write the sample and its sidecar.

    Paths in the sidecar are relative to `root` (the data root) when the sample is under it, else
    to the sample's own folder. The source is a `file` parent when it is under that root, else a
    `file://` URL parent (a leaf of the trace, checked when it still exists).
    """
    source_upath = as_upath(source_path)
    if not source_upath.is_absolute() and source_upath.protocol in ("", "file", "local"):
        source_upath = UPath(Path(str(source_upath)).resolve())
    root_upath = as_upath(root)
    source = Source.open_path(source_upath, fmt)
    parent_sha, parent_size = sha256_file(source_upath)
    sample = draw(source, regime, rows, seed=seed, step=step, validate=validate)
    target = (
        as_upath(out)
        if out is not None
        else default_sample_path(source_upath, root_upath, sample, source.format)
    )
    if target.protocol in ("", "file", "local") and not target.is_absolute():
        target = UPath(Path(str(target)).resolve())
    if not _is_under(target, root_upath):
        root_upath = target.parent
    with atomic_write(target) as handle:
        for chunk in encode_sample(source.format, sample.header, sample.selection.records):
            handle.write(chunk)
    details: dict[str, Any] = {
        "format": source.format.value,
        "compression": source.compression.value,
        "size_bytes": parent_size,
        "validated": validate,
        **sample.selection.params,
    }
    if sample.selection.records_read is not None:
        details["records_read"] = sample.selection.records_read
    factory = MetadataFactory(root_upath, code_version=code_version)
    if _is_under(source_upath, root_upath):
        parent = factory.file_parent(source_upath, sha256=parent_sha, **details)
    else:
        location = (
            Path(source_upath.path).as_uri()
            if source_upath.protocol in ("", "file", "local")
            else str(source_upath)
        )
        parent = ParentRef(kind="url", path=location, sha256=parent_sha, details=details)
    metadata = factory.sample(
        target,
        parent=parent,
        regime_type=sample.regime.value,
        n_rows=len(sample.selection.records),
        strategy_used=sample.strategy_used,
        source_offset=sample.selection.source_offset,
        seed=sample.seed,
        sampler_version=SAMPLER_VERSION,
    )
    sidecar = write_sidecar(target, metadata)
    return SampleArtifact(target, sidecar, metadata)
