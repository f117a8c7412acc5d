"""The explorer page: its data (quantisation, tables → JSON) and the page in a real headless
browser (Chromium through Playwright): no JavaScript error, every view drawn, the views
linked by one selection. The browser test skips where Chromium or Playwright is missing
(.ci/run installs both)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vitlib.explorer import NAN_BYTE, explorer_data, quantise, write_explorer
from vitlib.tables import tidy


def _world(tmp_path: Path) -> dict:
    """Two models with k-NN curves, a similarity grid of the pair and attention maps."""
    rng = np.random.default_rng(0)
    summ, maps = [], {}
    for model, fam in (("m_sup", "timm"), ("m_mae", "mae")):
        t = tidy(
            pd.DataFrame(
                {
                    "model": model,
                    "family": fam,
                    "depth": 4,
                    "dataset": "val",
                    "layer": range(4),
                    "k": 20,
                    "top1": rng.uniform(10, 60, 4),
                    "top1_ci_low": 5.0,
                    "top1_ci_high": 70.0,
                    "top5": 0.0,
                }
            ),
            analysis="knn",
            metrics=("top1", "top5"),
        )
        p = tmp_path / f"knn_{model}.csv"
        t.to_csv(p, index=False)
        summ.append(p)
        npz = tmp_path / f"maps_{model}.npz"
        np.savez(
            npz,
            cls=rng.random((4, 3, 1 + 16)),
            aligned=rng.random((4, 3, 7, 7)),
        )
        maps[("world", model)] = npz
    rows = [
        {
            "analysis": "similarity",
            "dataset": "world",
            "model_x": x,
            "model_y": y,
            "family_x": "timm" if x == "m_sup" else "mae",
            "family_y": "timm" if y == "m_sup" else "mae",
            "kind": "cls",
            "layer_x": i,
            "layer_y": j,
            "metric": "linear_cka",
            "value": 1.0 / (1 + abs(i - j)) if x == y else 0.1 * i + 0.05 * j,
            "significant": i == j,
        }
        for x, y in (("m_sup", "m_sup"), ("m_sup", "m_mae"), ("m_mae", "m_mae"))
        for i in range(4)
        for j in range(4)
    ]
    grid = tmp_path / "similarity.csv"
    pd.DataFrame(rows).to_csv(grid, index=False)
    return {"summary_tables": summ, "grid_tables": [grid], "attention_maps": maps}


def test_quantise_round_trip_and_nan():
    v = np.array([0.0, 0.5, 1.0, np.nan])
    q = np.frombuffer(base64.b64decode(quantise(v, 0.0, 1.0)), np.uint8)
    assert q.tolist() == [0, 127, 254, NAN_BYTE]


def test_explorer_data_from_tables(tmp_path):
    d = explorer_data(**_world(tmp_path), title="t", models=["m_mae"])
    assert [m["id"] for m in d["models"]] == ["m_mae", "m_sup"]  # the given order first
    assert {m["id"]: m["depth"] for m in d["models"]} == {"m_mae": 4, "m_sup": 4}
    knn = next(c for c in d["curves"] if c["metric"].startswith("k-NN top-1"))
    assert knn["series"]["m_sup"]["layer"] == [0, 1, 2, 3]
    assert knn["series"]["m_sup"]["lo"] == [5.0] * 4
    g = next(g for g in d["grids"] if g["x"] == "m_sup" and g["y"] == "m_mae")
    q = np.frombuffer(base64.b64decode(g["q"]), np.uint8).reshape(4, 4)
    vals = g["lo"] + (g["hi"] - g["lo"]) * q / 254
    want = 0.1 * np.arange(4)[:, None] + 0.05 * np.arange(4)[None, :]
    np.testing.assert_allclose(vals, want, atol=(g["hi"] - g["lo"]) / 254)
    m = d["maps"][0]
    assert (m["L"], m["H"], m["h"], m["w"]) == (4, 3, 4, 4)
    size = write_explorer(d, tmp_path / "e.html")
    html = (tmp_path / "e.html").read_text()
    assert size == len(html.encode()) and "/*__DATA__*/" not in html and "<script" in html


def _browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    required = bool(os.environ.get("VITLIB_REQUIRE_BROWSER"))  # .ci/run: Chromium is there
    if exe is None:
        if required:
            pytest.fail("VITLIB_REQUIRE_BROWSER is set but Chromium is not on the PATH")
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    try:
        import playwright.sync_api as sync
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (the test extra installs it)")
    return exe, sync


def test_explorer_in_a_real_browser(tmp_path):
    exe, sync = _browser()
    d = explorer_data(**_world(tmp_path), title="vitlib test run")
    page_path = tmp_path / "explorer.html"
    write_explorer(d, page_path)
    errors: list[str] = []
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(page_path.as_uri())
        assert page.title() == "vitlib test run"
        assert page.locator(".model").count() == 2
        assert page.locator("#curve polyline").count() == 2  # one line per model
        assert page.locator("#curve polygon").count() == 2  # their intervals
        # the grid and the attention maps are drawn (non-blank canvases)
        ink = (
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"
        )
        assert page.locator("#gridcanvas").evaluate(ink) > 1000
        assert page.locator("#headsA canvas").count() == 3
        assert page.locator("#headsA canvas").first.evaluate(ink) > 100
        sel = lambda: page.evaluate("document.body.dataset.selection")  # noqa: E731
        assert sel() == "m_sup|0|m_mae|0|0"
        # linked views: a grid cell selects both layers (row 3 of A, column 2 of B) ...
        box = page.locator("#gridcanvas").bounding_box()
        cw, ch = (box["width"] - 30) / 4, (box["height"] - 30) / 4
        page.mouse.click(box["x"] + 30 + 1.5 * cw, box["y"] + 2.5 * ch)
        assert sel() == "m_sup|2|m_mae|1|0"
        assert "block 3 of 4" in page.locator("#mapA").inner_text()
        assert page.locator("#curve circle[r='5']").count() == 2  # both selected points
        # ... a head canvas selects the head, a curve point selects model and layer
        page.locator("#headsB canvas").nth(2).click()
        assert sel().endswith("|2")
        page.locator("#curve circle[data-model='m_mae'][data-layer='3']").click()
        assert sel().startswith("m_mae|3|")
        # shift-click sets model B; the search filters the list
        page.locator(".model[data-model='m_sup']").click(modifiers=["Shift"])
        assert sel().split("|")[2] == "m_sup"
        page.fill("#search", "mae")
        assert page.locator(".model").count() == 1
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors, errors
    assert shot.stat().st_size > 20_000
