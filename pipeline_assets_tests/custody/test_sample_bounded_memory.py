"""The sampler streams: records generated on the fly (never held whole, here or in the sampler) are
sampled, gzip-compressed or not, through both JSON-array readers, in a separate process whose peak
resident memory grows by far less than the input's size."""

import json
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter, so that its peak RSS is the sampler's alone.
SCRIPT = textwrap.dedent(
    """
    import io, json, resource, sys, zlib
    from pipeline_assets.lib.sample import Source, draw

    layout, records, compressed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "gz"
    # One record template, numbered: fast to make, so the input can be large.
    line = '{"id":%d,"name":"System %08d","coords":{"x":%d.5,"y":-%d,"z":%d},"tags":["a","b"],"pad":"%s"}'
    pretty = line.replace(',"', ',\\n    "').replace("{", "{\\n    ")
    template = pretty if layout == "pretty" else line
    produced = [0]

    def chunks():
        yield b"[\\n"
        for start in range(0, records, 1000):
            block = ",\\n".join(
                "    " + template % (i, i, i, i, i % 977, "x" * 40) for i in range(start, min(start + 1000, records))
            )
            yield (block + (",\\n" if start + 1000 < records else "\\n")).encode()
        yield b"]\\n"

    def counted():
        for chunk in chunks():
            produced[0] += len(chunk)
            yield chunk

    def gzipped(parts):
        z = zlib.compressobj(1, zlib.DEFLATED, 31)
        for part in parts:
            yield z.compress(part)
        yield z.flush()

    class Generated(io.RawIOBase):
        def __init__(self, parts):
            self.parts, self.pending = parts, b""
        def readable(self):
            return True
        def readinto(self, buffer):
            while len(self.pending) < len(buffer):
                part = next(self.parts, None)
                if part is None:
                    break
                self.pending += part
            n = min(len(buffer), len(self.pending))
            buffer[:n], self.pending = self.pending[:n], self.pending[n:]
            return n

    def opener():
        return Generated(gzipped(counted()) if compressed else counted())

    source = Source.from_opener(opener, "generated.json")
    produced[0] = 0
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sample = draw(source, "random", 100, seed=5)
    step = draw(source, "systematic", 100, step=records // 100)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "input_bytes": produced[0], "growth": peak - baseline,
        "random": [[r.index, r.value["id"]] for r in sample.selection.records],
        "read": sample.selection.records_read,
        "systematic": [r.value["id"] for r in step.selection.records],
    }))
    """
)


@pytest.mark.parametrize(
    ("layout", "records", "compression"),
    [("edsm", 150_000, "plain"), ("edsm", 150_000, "gz"), ("pretty", 100_000, "gz")],
)
def test_sampling_a_generated_stream_keeps_memory_flat(layout, records, compression):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, layout, str(records), compression],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    # Two passes over the generated input.
    assert result["input_bytes"] > 2 * 20_000_000
    assert result["growth"] < 12_000_000, result["growth"]
    assert result["read"] == records
    picked = result["random"]
    assert len(picked) == 100 and all(index == rid for index, rid in picked)
    assert [i for i, _ in picked] == sorted({i for i, _ in picked})
    assert result["systematic"] == list(range(0, records, records // 100))
