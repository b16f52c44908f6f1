"""Peak memory and time of the worker's decode + preprocess step on hostile shapes.

Each case runs in a fresh interpreter (``ru_maxrss`` is a process-wide peak) under an
address-space cap, so a regression fails with MemoryError instead of taking the
machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import io, json, resource, sys, time
import numpy as np
from PIL import Image
from serving.preprocessing import get_policy
from stream.decode import DecodeLimits
from stream.pipeline import decode_and_preprocess

w, h, policy = int(sys.argv[1]), int(sys.argv[2]), get_policy(sys.argv[3])
def png(w, h):
    px = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    return buf.getvalue()
decode_and_preprocess(png(64, 48), DecodeLimits(), policy)  # warm up plugins
data = png(w, h)
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    out = decode_and_preprocess(data, DecodeLimits(), policy)
    shape = list(out.shape)
except MemoryError:
    shape = None
elapsed = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "s": elapsed, "shape": shape}))
"""


@pytest.mark.parametrize("policy", ["clip_default", "ufd_eval", "resize256_crop224"])
@pytest.mark.parametrize("size", [(100_000, 1), (1, 100_000)], ids=["wide", "tall"])
def test_decode_and_preprocess_bounded_on_extreme_aspect(
    size: tuple[int, int], policy: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(size[0]), str(size[1]), policy],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["shape"] == [224, 224, 3]
    assert result["growth_mb"] < 100, result
    assert result["s"] < 1.0, result
