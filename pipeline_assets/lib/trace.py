"""The trace: from any file back to its original sources, through the chain-of-custody sidecars.

A file's sidecar (`<file>.meta.json`) names its parents. A parent of kind `file` is followed: it
is found relative to the root of the file that names it (the file's location less the `path` its
sidecar records), or else relative to one of the extra roots given (the data root and the lake
root), and its own sidecar is read in turn. A parent of kind `url` or `query` is a leaf, shown
with its details (a `file://` URL that still exists is hashed and checked). Two kinds of file
have no sidecar and are still links: original sources under `source/` (the collectors' worker
files: checked against the SHA256 their child recorded) and the lake's `_empty.json` markers of
partitions with no rows (checked the same way; the parents they name are followed).

Every file is checked twice: against its own sidecar (was it changed after it was written?) and
against the SHA256 its child recorded (is it the file the child was made from?). A link is broken
when a file is missing, has no sidecar, has an unreadable sidecar, or does not match; the trace
names each broken link. Files are hashed once per trace however often they are reached.

`audit_tree` walks a root and lists data files without a verifying sidecar. No Dagster imports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.lib.custody import (
    SIDECAR_SUFFIX,
    CustodyError,
    read_sidecar,
    sidecar_path,
    verify_file,
)
from pipeline_assets.lib.files import TEMP_SUFFIX, as_upath, sha256_file
from pipeline_assets.lib.settings import LAKE_LAYERS

EMPTY_MARKER = "_empty.json"
SOURCE_PREFIXES: tuple[str, ...] = ("source/",)


@dataclass
class TraceNode:
    """One link of the chain: a file, URL or query, what was expected of it and what was found."""

    kind: str
    path: str
    location: str | None = None
    sha256: str | None = None
    actual_sha256: str | None = None
    verified: bool | None = None
    role: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    children: list[TraceNode] = field(default_factory=list)
    seen_before: bool = False

    def walk(self) -> Iterator[TraceNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "location": self.location,
            "kind": self.kind,
            "role": self.role,
            "sha256": self.sha256,
            "actual_sha256": self.actual_sha256,
            "verified": self.verified,
            "error": self.error,
            "details": self.details,
            "seen_before": self.seen_before,
            "children": [child.to_json() for child in self.children],
        }


@dataclass(frozen=True)
class BrokenLink:
    """A file (or URL) and what is wrong with it: a broken link of a trace, or a problem the
    audit found (then `location` is relative to the audited root)."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass
class TraceResult:
    root: TraceNode
    broken: list[BrokenLink]

    @property
    def ok(self) -> bool:
        return not self.broken

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "broken": [{"location": b.location, "reason": b.reason} for b in self.broken],
            "tree": self.root.to_json(),
        }


def _root_of(location: str, recorded_path: str) -> str | None:
    """The root a file's sidecar path is relative to, or None when the file is not at that path."""
    suffix = "/" + recorded_path
    return location[: -len(suffix)] if location.endswith(suffix) else None


def _is_inside(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and "://" not in path and ".." not in parts


class _Tracer:
    def __init__(self, extra_roots: Sequence[str], source_prefixes: Sequence[str]):
        self.extra_roots = list(dict.fromkeys(str(as_upath(r)).rstrip("/") for r in extra_roots))
        self.source_prefixes = tuple(source_prefixes)
        self.done: dict[str, TraceNode] = {}
        self.hashes: dict[str, tuple[str, int] | None] = {}
        self.stack: list[str] = []

    def _hash(self, location: str) -> tuple[str, int] | None:
        if location not in self.hashes:
            try:
                self.hashes[location] = sha256_file(location)
            except (FileNotFoundError, IsADirectoryError):
                self.hashes[location] = None
        return self.hashes[location]

    def _resolve(self, rel: str, child_root: str | None) -> tuple[str, list[str]]:
        """Where a parent is: under the root of the file naming it, else under an extra root.
        When it is nowhere, a lake path is named under the child's root and any other under
        the first extra root (the data root). Returns the location, and the roots looked in when
        it is nowhere."""
        candidates = list(dict.fromkeys(([child_root] if child_root else []) + self.extra_roots))
        for root in candidates:
            location = f"{root}/{rel}"
            upath = as_upath(location)
            if upath.exists() or sidecar_path(upath).exists():
                return location, []
        if not candidates:
            return rel, candidates
        in_lake = rel.split("/", 1)[0] in LAKE_LAYERS
        chosen = candidates[0] if in_lake or not self.extra_roots else self.extra_roots[0]
        return f"{chosen}/{rel}", candidates

    def file(
        self, location: str, *, rel: str | None, expected: str | None, child: str | None
    ) -> TraceNode:
        node = TraceNode(kind="file", path=rel or location, location=location, sha256=expected)
        if location in self.done:
            seen = self.done[location]
            return TraceNode(
                kind="file",
                path=node.path,
                location=location,
                sha256=expected,
                actual_sha256=seen.actual_sha256,
                verified=seen.verified,
                role=seen.role,
                error=seen.error,
                seen_before=True,
            )
        if location in self.stack:
            node.error = "cycle: the file is its own ancestor"
            node.verified = False
            return node
        self.stack.append(location)
        try:
            self._check_file(node, rel=rel, expected=expected, child=child)
        finally:
            self.stack.pop()
        self.done[location] = node
        return node

    def _fail(self, node: TraceNode, reason: str) -> TraceNode:
        node.verified = False
        node.error = reason
        return node

    def _check_file(
        self, node: TraceNode, *, rel: str | None, expected: str | None, child: str | None
    ) -> None:
        location = node.location or node.path
        made = f" (a parent of {child})" if child else ""
        hashed = self._hash(location)
        node.actual_sha256 = hashed[0] if hashed else None
        name = location.rsplit("/", 1)[-1]
        if name == EMPTY_MARKER:
            node.role = "empty-partition marker"
            self._check_against_child(node, expected, made)
            if node.verified is not False:
                self._follow_marker(node, location, rel)
            return
        if not sidecar_path(as_upath(location)).exists():
            if hashed is None:
                self._fail(node, f"the file is missing, and so is its sidecar{made}")
            elif rel is not None and rel.startswith(self.source_prefixes):
                node.role = "source"
                self._check_against_child(node, expected, made)
            else:
                reason = f"the file has no sidecar {location.rsplit('/', 1)[-1]}{SIDECAR_SUFFIX}"
                if expected is not None and hashed[0] != expected:
                    reason += f", and its SHA256 is {hashed[0]}, not the {expected} recorded when its child was made"
                self._fail(node, reason + made)
            return
        try:
            record = read_sidecar(as_upath(location))
        except CustodyError as exc:
            self._fail(node, f"{exc}{made}")
            return
        node.role = record.contract_name
        node.details = {"contract": f"{record.contract_name}/{record.contract_version}"}
        for key in ("asset_key", "partition_key", "run_id", "code_version"):
            if getattr(record, key, None):
                node.details[key] = getattr(record, key)
        for key in (
            "transformation_name",
            "regime_type",
            "strategy_used",
            "n_rows",
            "seed",
            "source_url",
            "rows",
        ):
            value = getattr(record, key, None)
            if value is not None:
                node.details[key] = value
        if node.sha256 is None:
            node.sha256 = record.file_sha256
        if hashed is None:
            self._fail(node, f"the file is missing but its sidecar exists{made}")
            return
        if hashed[0] != record.file_sha256:
            self._fail(
                node,
                f"SHA256 is {hashed[0]}, but its sidecar records {record.file_sha256} "
                f"(the file was changed after it was written){made}",
            )
            return
        if not self._check_against_child(node, expected, made):
            return
        root = _root_of(location, record.path)
        if root is None:
            self._fail(
                node,
                f"its sidecar records the path {record.path!r}, which is not where the file is (moved?)",
            )
            return
        node.verified = True
        for parent in record.parents:
            node.children.append(self.parent(parent, root=root, child=location))

    def _check_against_child(self, node: TraceNode, expected: str | None, made: str) -> bool:
        if node.actual_sha256 is None:
            self._fail(node, f"the file is missing{made}")
            return False
        if expected is not None and node.actual_sha256 != expected:
            self._fail(
                node,
                f"SHA256 is {node.actual_sha256}, but {expected} was recorded when its child was made{made}",
            )
            return False
        node.verified = True
        return True

    def _follow_marker(self, node: TraceNode, location: str, rel: str | None) -> None:
        try:
            payload = json.loads(as_upath(location).read_bytes())
            parents = [ParentRef.model_validate(p) for p in payload.get("parents", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            self._fail(node, f"not a readable empty-partition marker ({exc})")
            return
        # Its parents are relative to the root its child found it under (else an extra root).
        root = _root_of(location, rel) if rel else None
        root = root or next((r for r in self.extra_roots if location.startswith(r + "/")), None)
        for parent in parents:
            node.children.append(self.parent(parent, root=root, child=location))

    def parent(self, ref: ParentRef, *, root: str | None, child: str) -> TraceNode:
        if ref.kind == "file":
            if not _is_inside(ref.path):
                return TraceNode(
                    kind="file",
                    path=ref.path,
                    sha256=ref.sha256,
                    verified=False,
                    error=f"the sidecar of {child} names a parent outside its root: {ref.path!r}",
                )
            location, looked_in = self._resolve(ref.path, root)
            node = self.file(location, rel=ref.path, expected=ref.sha256, child=child)
            if node.error and len(looked_in) > 1:
                node.error += f"; looked under {', '.join(looked_in)}"
            if ref.details and not node.seen_before:
                node.details = {**ref.details, **node.details}
            return node
        node = TraceNode(
            kind=ref.kind, path=ref.path, sha256=ref.sha256, details=dict(ref.details), role="leaf"
        )
        if ref.kind == "url" and ref.path.startswith("file://"):
            local = unquote(urlparse(ref.path).path)
            hashed = self._hash(local) if os.path.exists(local) else None
            if hashed is not None:
                node.location = local
                node.actual_sha256 = hashed[0]
                node.verified = ref.sha256 is None or hashed[0] == ref.sha256
                if not node.verified:
                    node.error = f"SHA256 is {hashed[0]}, but {ref.sha256} was recorded when {child} was made"
        return node


def trace(
    path: str | os.PathLike[str] | UPath,
    *,
    roots: Iterable[str | os.PathLike[str] | UPath] = (),
    source_prefixes: Sequence[str] = SOURCE_PREFIXES,
) -> TraceResult:
    """Walk the sidecars from `path` back to its sources; every broken link is named.

    `roots` are where parents are looked for when they are not under the root of the file that
    names them: the data root first, then the lake root.
    """
    upath = as_upath(path)
    if upath.protocol in ("", "file", "local"):
        upath = UPath(Path(str(upath.path)).absolute())
    tracer = _Tracer([str(r) for r in roots], source_prefixes)
    root = tracer.file(str(upath).rstrip("/"), rel=None, expected=None, child=None)
    broken = [
        BrokenLink(node.location or node.path, node.error or "not verified")
        for node in root.walk()
        if node.verified is False and not node.seen_before
    ]
    return TraceResult(root, broken)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _label(node: TraceNode) -> str:
    if node.kind != "file":
        status = {True: "ok", False: "BROKEN", None: "not checkable"}[node.verified]
        shown = {k: v for k, v in node.details.items() if k not in ("query",)}
        extra = f"  {json.dumps(shown, sort_keys=True, default=str)}" if shown else ""
        return f"{node.kind} {node.path}  sha256={_short(node.sha256)}  [{status}]{extra}"
    status = "ok" if node.verified else "BROKEN"
    role = f"  {node.role}" if node.role else ""
    what = ""
    if node.details.get("asset_key"):
        what += f"  asset={node.details['asset_key']}"
        if node.details.get("partition_key"):
            what += f"[{node.details['partition_key']}]"
    if node.details.get("regime_type"):
        what += f"  sample={node.details['regime_type']}/{node.details.get('n_rows')}"
    text = (
        f"{node.path}  sha256={_short(node.actual_sha256 or node.sha256)}{role}{what}  [{status}]"
    )
    if node.seen_before:
        text += "  (shown above)"
    if node.error:
        text += f"\n    ! {node.error}"
    return text


def format_tree(result: TraceResult) -> str:
    """The trace as an indented tree, one line per link (a broken one says why)."""
    lines: list[str] = []

    def emit(node: TraceNode, prefix: str, connector: str, child_prefix: str) -> None:
        label = _label(node).split("\n")
        lines.append(prefix + connector + label[0])
        for extra in label[1:]:
            lines.append(prefix + child_prefix + "  " + extra.strip())
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            emit(
                child, prefix + child_prefix, "└── " if last else "├── ", "    " if last else "│   "
            )

    emit(result.root, "", "", "")
    return "\n".join(lines)


# --- the audit -----------------------------------------------------------------------------

# Paths under the data root that are not the product's data files, and why.
AUDIT_EXEMPT_PREFIXES: dict[str, str] = {
    "source/workers/": "the collectors' SQLite files: sources the product reads, never writes",
    "source/postgres/": "the embedded PostgreSQL's own files: a database server, not data files",
    "demo/": "the demo's stand-ins for remote sources (served by file:// URL, so they are URL leaves)",
}
AUDIT_EXEMPT_NAMES: dict[str, str] = {
    EMPTY_MARKER: "marks a partition with no rows; holds its parents itself and is checked by the trace",
    "README.md": "documentation of the folder",
    ".gitkeep": "keeps an empty folder in git",
    "gex_data.db": "the GEX engine's DuckDB store: a mutable database, not a file with fixed content",
    "gex_history.db": "the GEX job store (DuckDB): a mutable database, not a file with fixed content",
    "staging_export_state.json": "the staging exporter's mutable watermark state",
    ".staging_export.pending.json": "the staging exporter's journal of a write in progress",
}
AUDIT_EXEMPT_SUFFIXES: dict[str, str] = {
    SIDECAR_SUFFIX: "a sidecar itself",
    TEMP_SUFFIX: "a temporary of an atomic write in progress (or left by a killed writer)",
    ".duckdb.wal": "a database's write-ahead log",
    ".db.wal": "a database's write-ahead log",
    ".db-wal": "a database's write-ahead log",
    ".db-shm": "a database's shared-memory file",
    ".lock": "a lock file",
}


def audit_tree(
    root: str | os.PathLike[str],
    *,
    exempt_prefixes: Iterable[str] = AUDIT_EXEMPT_PREFIXES,
    exempt_names: Iterable[str] = AUDIT_EXEMPT_NAMES,
    exempt_suffixes: Iterable[str] = AUDIT_EXEMPT_SUFFIXES,
) -> tuple[list[str], list[BrokenLink]]:
    """Every file under a local root that must have a sidecar: (files checked, problems).

    A problem is a data file without a sidecar, with a sidecar that does not verify, or a sidecar
    whose data file is gone.
    """
    base = Path(root)
    prefixes, names, suffixes = tuple(exempt_prefixes), set(exempt_names), tuple(exempt_suffixes)
    checked: list[str] = []
    problems: list[BrokenLink] = []
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        if rel.endswith(SIDECAR_SUFFIX):
            data = path.with_name(path.name[: -len(SIDECAR_SUFFIX)])
            if not data.exists():
                problems.append(BrokenLink(rel, "a sidecar whose data file is missing"))
            continue
        if rel.startswith(prefixes) or path.name in names or rel.endswith(suffixes):
            continue
        if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX):
            continue
        checked.append(rel)
        try:
            verify_file(UPath(path))
        except CustodyError as exc:
            problems.append(BrokenLink(rel, str(exc)))
    return checked, problems
