"""Trace properties on random chains of files: an untouched chain verifies, and one random damage
(a changed byte, a deleted file or sidecar, an unreadable sidecar, a file replaced with a fresh
sidecar) anywhere in the traced file's ancestry is named as the one broken link; parents outside
the root, URL and query leaves, and empty-partition markers."""

import hashlib
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.lib.custody import MetadataFactory, write_sidecar
from pipeline_assets.lib.trace import format_tree, trace

DAMAGES = ["flip", "delete_file", "delete_sidecar", "corrupt_sidecar", "replace_and_reseal"]


@st.composite
def chains(draw):
    """Sources (no sidecars, under source/) and derived files, each derived from earlier ones."""
    n_sources = draw(st.integers(1, 3))
    n_derived = draw(st.integers(1, 6))
    parents: list[list[int]] = []
    for i in range(n_derived):
        earlier = list(range(n_sources + i))
        parents.append(
            draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))
        )
    contents = draw(
        st.lists(
            st.binary(min_size=1, max_size=64),
            min_size=n_sources + n_derived,
            max_size=n_sources + n_derived,
        )
    )
    url_leaf = draw(st.booleans())
    return n_sources, parents, contents, url_leaf


def build(root: Path, chain) -> list[Path]:
    n_sources, parents, contents, url_leaf = chain
    factory = MetadataFactory(UPath(root), code_version="test")
    files: list[Path] = []
    for i in range(n_sources):
        path = root / "source" / f"s{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"source %d " % i + contents[i])
        files.append(path)
    for i, picked in enumerate(parents):
        path = root / ("bronze" if i % 2 else "silver") / f"f{i}" / "data.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"derived %d " % i + contents[n_sources + i])
        refs = [factory.file_parent(UPath(files[j])) for j in picked]
        if url_leaf and i == 0:
            refs.append(
                ParentRef(kind="url", path="https://example.test/dump.json.gz", sha256="a" * 64)
            )
        record = factory.processed(UPath(path), parents=refs, transformation_name=f"step{i}")
        write_sidecar(UPath(path), record, fsync=False)
        files.append(path)
    return files


def ancestors(chain, index: int) -> set[int]:
    n_sources, parents, _, _ = chain
    found, todo = set(), [index]
    while todo:
        i = todo.pop()
        if i in found:
            continue
        found.add(i)
        if i >= n_sources:
            todo.extend(parents[i - n_sources])
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.data())
def test_one_damage_is_named_as_the_one_broken_link(chain, data):
    n_sources = chain[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build(root, chain)
        target = files[-1]
        clean = trace(target)
        assert clean.ok, clean.broken
        assert all(n.verified is not False for n in clean.root.walk())

        victim = data.draw(st.sampled_from(sorted(ancestors(chain, len(files) - 1))))
        is_source = victim < n_sources
        is_root = victim == len(files) - 1
        options = ["flip", "delete_file"] if is_source else DAMAGES[:-1] if is_root else DAMAGES
        damage = data.draw(st.sampled_from(options))
        path = files[victim]
        sidecar = Path(str(path) + ".meta.json")
        if damage == "flip":
            raw = bytearray(path.read_bytes())
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0x01
            path.write_bytes(bytes(raw))
        elif damage == "delete_file":
            path.unlink()
        elif damage == "delete_sidecar":
            sidecar.unlink()
        elif damage == "corrupt_sidecar":
            sidecar.write_text('{"contract_name": "processed_metadata", "path": ')
        else:
            path.write_bytes(path.read_bytes() + b" changed")
            record = json.loads(sidecar.read_text())
            record["processed_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            record["size_bytes"] = path.stat().st_size
            sidecar.write_text(json.dumps(record))

        result = trace(target)
        assert [b.location for b in result.broken] == [str(path)], format_tree(result)
        reason = result.broken[0].reason
        expected = {
            "flip": "SHA256 is",
            "delete_file": "the file is missing",
            "delete_sidecar": "the file has no sidecar",
            "corrupt_sidecar": "not valid JSON",
            "replace_and_reseal": "was recorded when its child was made",
        }[damage]
        assert expected in reason


def test_parents_outside_the_root_are_refused(tmp_path):
    factory = MetadataFactory(UPath(tmp_path), code_version="test")
    path = tmp_path / "silver" / "x" / "data.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    for bad in ("../outside.bin", "/etc/hostname"):
        record = factory.processed(
            UPath(path),
            parents=[ParentRef(kind="file", path=bad, sha256="b" * 64)],
            transformation_name="t",
        )
        write_sidecar(UPath(path), record, fsync=False)
        result = trace(path)
        assert len(result.broken) == 1
        assert (
            result.broken[0].reason
            == f"the sidecar of {path} names a parent outside its root: {bad!r}"
        )


def test_query_and_url_leaves_are_shown_with_their_details(tmp_path):
    factory = MetadataFactory(UPath(tmp_path), code_version="test")
    path = tmp_path / "hq" / "dx" / "data.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"rows")
    local = tmp_path / "elsewhere.json"
    local.write_bytes(b"[]")
    parents = [
        ParentRef(
            kind="query",
            path="postgresql://pipeline@db:5432/ops public.operation_runs",
            sha256="c" * 64,
            details={"query": "select * from operation_runs", "rows": 3},
        ),
        ParentRef(
            kind="url", path="https://example.test/a.json", sha256="d" * 64, details={"etag": '"x"'}
        ),
        ParentRef(kind="url", path=local.as_uri(), sha256=hashlib.sha256(b"[]").hexdigest()),
    ]
    write_sidecar(
        UPath(path),
        factory.processed(UPath(path), parents=parents, transformation_name="t"),
        fsync=False,
    )
    result = trace(path)
    assert result.ok
    query, url, file_url = result.root.children
    assert (query.kind, query.verified, query.details["rows"]) == ("query", None, 3)
    assert (url.kind, url.verified, url.details) == ("url", None, {"etag": '"x"'})
    assert (file_url.verified, file_url.location) == (True, str(local))
    text = format_tree(result)
    assert "query postgresql://pipeline@db:5432/ops public.operation_runs" in text
    assert "[not checkable]" in text

    local.write_bytes(b"[1]")
    result = trace(path)
    assert [b.location for b in result.broken] == [str(local)]


def test_an_empty_partition_marker_is_followed_to_its_parents(tmp_path):
    factory = MetadataFactory(UPath(tmp_path), code_version="test")
    source = tmp_path / "source" / "workers" / "w.db"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"sqlite")
    marker = tmp_path / "bronze" / "b" / "date=2026-01-01" / "_empty.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(
        json.dumps({"parents": [factory.file_parent(UPath(source)).model_dump(mode="json")]})
    )
    child = tmp_path / "silver" / "s" / "date=2026-01-01" / "data.bin"
    child.parent.mkdir(parents=True)
    child.write_bytes(b"nothing")
    write_sidecar(
        UPath(child),
        factory.processed(
            UPath(child), parents=[factory.file_parent(UPath(marker))], transformation_name="t"
        ),
        fsync=False,
    )
    result = trace(child)
    assert result.ok, result.broken
    (marker_node,) = result.root.children
    assert marker_node.role == "empty-partition marker"
    assert [c.path for c in marker_node.children] == ["source/workers/w.db"]
    source.write_bytes(b"changed")
    assert [b.location for b in trace(child).broken] == [str(source)]


def test_a_file_reached_twice_is_hashed_once_and_shown_once(tmp_path):
    chain = (1, [[0], [0], [1, 2]], [b"a", b"b", b"c", b"d"], False)
    files = build(tmp_path, chain)
    result = trace(files[-1])
    assert result.ok
    repeated = [n for n in result.root.walk() if n.seen_before]
    assert [n.path for n in repeated] == ["source/s0.bin"]
    assert "(shown above)" in format_tree(result)
