"""The report's first page: what was run, the paper's tables, the findings and an index of
every figure by paper section with its caption (reStructuredText, included by
``report/workflow.rst``)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vitlib.downstream.summary import to_rst


def _heading(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n\n"


def _indent(text: str) -> str:
    return "\n".join(("   " + line) if line.strip() else "" for line in text.splitlines())


def run_card(
    *,
    models: Sequence[Mapping[str, Any]],
    datasets: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    version: str,
    date: str | None = None,
) -> str:
    """What the run is: its models (id, family, depth, width, patch, image size, weights),
    its datasets (kind, source), key settings, vitlib version, date."""
    date = date or datetime.datetime.now().isoformat(timespec="minutes")
    out = _heading("What was run", "-")
    out += f"vitlib {version}, report page written {date}.\n\n"
    out += to_rst(pd.DataFrame(models).set_index("model"), "Models") + "\n"
    ds = pd.DataFrame(
        [
            {
                "dataset": name,
                "kind": d.get("kind", ""),
                "source": (
                    f"generated (seed {d['generate'].get('seed', 0)})"
                    if "generate" in d
                    else str(d.get("root", ""))
                ),
            }
            for name, d in datasets.items()
        ]
    ).set_index("dataset")
    out += to_rst(ds, "Datasets") + "\n"
    st = pd.DataFrame([{"setting": k, "value": str(v)} for k, v in settings.items()])
    out += to_rst(st.set_index("setting"), "Settings") + "\n"
    return out


def figure_index(figures: Sequence[Mapping[str, str]]) -> str:
    """Every figure of the run by paper section: its paper figure(s), file and caption.
    ``figures``: dicts with ``section`` (paper section), ``paper``, ``path``, ``caption``."""
    out = _heading("Figures by paper section", "-")
    out += (
        "Every figure is in the results menu (by dataset) as PNG with its caption; the PDF"
        " is beside the PNG in the results folder. Main-text figures show the main models;"
        " ``appendix/`` figures show every model, one panel per family, against normalised"
        " depth.\n\n"
    )
    by_section: dict[str, list[Mapping[str, str]]] = {}
    for f in figures:
        by_section.setdefault(f["section"], []).append(f)
    for section in sorted(by_section):
        out += _heading(section, "~")
        for f in by_section[section]:
            paper = f" (paper {f['paper']})" if f.get("paper") else ""
            out += f"* ``{f['path']}``{paper}\n\n{_indent(f['caption'])}\n\n"
    return out


def write_report_page(
    out: str | Path,
    *,
    card: str,
    parts: Sequence[str | Path],
    table6: Sequence[str | Path] = (),
    figures: Sequence[Mapping[str, str]] = (),
) -> None:
    """The first page: each reStructuredText part (the findings with the run's
    description, the paper tables), the run card, Table 6 (linear probes) when run, then the
    figure index."""
    text = ""
    for p in parts:
        text += Path(p).read_text() + "\n\n"
    text += card
    for p in table6:
        t = pd.read_csv(p, index_col=0)
        t = t.map(lambda v: f"{v:.2f}" if isinstance(v, float) else v)
        text += "\n" + to_rst(t, f"Table 6 (linear probes, top-1 %): {Path(p).parent.name}")
    if figures:
        text += "\n" + figure_index(figures)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
