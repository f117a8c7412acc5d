"""The report's first page and the figure layouts."""

from __future__ import annotations

import pandas as pd
import pytest
from docutils.core import publish_parts

from vitlib import registry
from vitlib.downstream.summary import to_rst
from vitlib.report import run_card, write_report_page


def test_every_section_has_a_paper_section():
    assert {a.section for a in registry.ANALYSES_LIST} <= set(registry.PAPER_SECTIONS)


def test_appendix_layout_only_where_declared(tmp_path):
    with_appendix = [n for n, (_, f) in registry.figures().items() if f.appendix]
    assert {
        "attention_distance",
        "clustering",
        "knn",
        "retrieval",
        "davis",
        "spair",
        "saliency",
        "segments",
    } <= set(with_appendix)
    with pytest.raises(ValueError, match="no 'appendix' layout"):
        registry.draw_figure(
            "cka_last_layer", [], [str(tmp_path / "x.png")], dpi=30, models=[], layout="appendix"
        )


def test_report_page_renders_as_html_tables(tmp_path):
    part = tmp_path / "t.rst"
    part.write_text(
        to_rst(pd.DataFrame({"a": ["1.00 (2)"]}, index=pd.Index(["m"], name="model")), "T1")
    )
    t6 = tmp_path / "world" / "probe_table6.csv"
    t6.parent.mkdir()
    pd.DataFrame({"CLS": [50.25]}, index=pd.Index(["m"], name="model")).to_csv(t6)
    card = run_card(
        models=[{"model": "m", "family": "fs", "depth": 12, "weights": 'x "y".pth'}],
        datasets={
            "w": {"kind": "imagefolder", "generate": {"seed": 3}},
            "r": {"kind": "coco", "root": "/d"},
        },
        settings={"extract": {"dtype": "bf16"}},
        version="9.9",
        date="2026-01-01",
    )
    out = tmp_path / "page.rst"
    figs = [
        {
            "section": "§6 Downstream tasks",
            "paper": "Fig. 9",
            "path": "figures/v/knn.png",
            "caption": "k-NN.",
        }
    ]
    write_report_page(out, card=card, parts=[part], table6=[t6], figures=figs)
    parts = publish_parts(
        out.read_text(), writer_name="html", settings_overrides={"report_level": 2}
    )
    html = parts["html_body"]
    assert html.count("<table") == 5  # T1, models, datasets, settings, Table 6
    for text in (
        "1.00 (2)",
        "generated (seed 3)",
        "/d",
        "50.25",
        "vitlib 9.9",
        "2026-01-01",
        "figures/v/knn.png",
        "(paper Fig. 9)",
        "x &quot;y&quot;.pth",
    ):
        assert text in html, text
    assert "System Message" not in html  # no docutils warning or error
