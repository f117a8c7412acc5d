"""The store format version moves with what the extraction writes.

A finished store records :data:`vitlib.store.FORMAT` in its identity, so bumping it makes
every store stale. This test pins what the capture and the reducers write for a fixed tiny
model and images — every array's name, shape, dtype, sum and sum of absolute values
(``tests/golden_store.json``, per FORMAT): a change to their output without a bump of
``FORMAT`` fails here. Record a new FORMAT with ``VITLIB_RECORD_GOLDEN=1 pytest
tests/test_store_format.py``.
"""

import json
import os
from pathlib import Path

import numpy as np
import zarr

from vitlib.extract import run_extraction
from vitlib.store import FORMAT

GOLDEN = Path(__file__).with_name("golden_store.json")


def summary(path) -> dict:
    g = zarr.open_group(str(path), mode="r")
    out = {}

    def walk(grp, prefix=""):
        for name, a in grp.arrays():
            x = np.asarray(a[...]).astype(np.float64)
            out[prefix + name] = [
                list(a.shape),
                str(a.dtype),
                float(x.sum()),
                float(np.abs(x).sum()),
            ]
        for name, sub in grp.groups():
            walk(sub, f"{prefix}{name}/")

    walk(g)
    return dict(sorted(out.items()))


def test_reducer_output_changes_bump_the_store_format(tmp_path, tiny_spec, tiny_manifest):
    out = tmp_path / "golden.zarr"
    run_extraction(
        tiny_spec, tiny_manifest, "center", out, batch_size=8, progress=False, device="cpu"
    )
    got = summary(out)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("VITLIB_RECORD_GOLDEN"):
        golden[str(FORMAT)] = got
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    want = golden.get(str(FORMAT))
    assert want is not None, f"store FORMAT {FORMAT} has no golden summary: record it"
    bump = "the extraction's output changed: bump vitlib.store.FORMAT and record it"
    assert sorted(got) == sorted(want), f"arrays differ: {sorted(set(got) ^ set(want))}; {bump}"
    for name, (shape, dtype, s, a) in want.items():
        g_shape, g_dtype, g_s, g_a = got[name]
        assert (g_shape, g_dtype) == (shape, dtype), f"{name}: {g_shape} {g_dtype}; {bump}"
        np.testing.assert_allclose(
            [g_s, g_a], [s, a], rtol=1e-4, atol=1e-3, err_msg=f"{name}; {bump}"
        )
