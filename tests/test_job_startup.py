"""Jobs import only what they use: the table job of every CPU analysis and every figure job
start without torch, timm or open_clip (about 2.5 s of import and teardown per job on a
2-core machine; docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "open_clip", "torchvision")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_cpu_table_jobs_do_not_import_torch():
    code = (
        "from vitlib.registry import ANALYSES_LIST, write_table\n"
        "import vitlib.store, vitlib.data.manifest, vitlib.logs\n"
        "for a in ANALYSES_LIST:\n"
        "    if not a.gpu:\n"
        "        a.function()\n"
    )
    assert _loaded_after(code) == []


def test_figure_jobs_do_not_import_torch():
    code = (
        "from vitlib.registry import figures, draw_figure, _load\n"
        "import vitlib.tables, vitlib.logs\n"
        "for _, f in figures().values():\n"
        "    _load(f.plot)\n"
    )
    assert _loaded_after(code) == []


def test_numpy_paths_equal_the_torch_paths():
    """What the tables now compute without torch equals the torch forms of the extraction."""
    import numpy as np
    import torch

    from vitlib.attention.core import (
        distance_template,
        mass_threshold_mask,
        uniform_attention_distance,
    )

    for hw in ((14, 14), (3, 5), (1, 1)):
        t = distance_template(hw).double()
        assert uniform_attention_distance(hw) == pytest.approx(float(t.mean()), rel=1e-7)
    rng = np.random.default_rng(0)
    maps = rng.random((4, 3, 49)) ** 4
    maps[0, 0, :5] = maps[0, 0, 5]  # ties: the stable order decides in both
    for mass in (0.3, 0.6, 0.9, 1.0):
        got = mass_threshold_mask(maps, mass)
        ref = mass_threshold_mask(torch.from_numpy(maps), mass).numpy()
        assert got.dtype == bool and (got == ref).all()


def test_extraction_jobs_do_not_import_the_analysis_libraries():
    """An extraction job (every view, in-pass DAVIS propagation and segment pooling
    included) loads neither scikit-learn, SciPy nor matplotlib."""
    code = (
        "import vitlib.extract, vitlib.metrics.segfeat, vitlib.downstream.davis\n"
        "import vitlib.downstream.tables, vitlib.downstream.knn_bank\n"
        "print(json.dumps([m for m in ('sklearn', 'scipy', 'matplotlib') if m in sys.modules]))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", "import sys, json\n" + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []
