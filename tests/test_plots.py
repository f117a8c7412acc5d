"""Every registered figure, drawn through :func:`vitlib.registry.draw_figure` from synthetic
tables of the real long format (three models of three families), then inspected: one curve
per model in every curve panel, in its family's palette colour, named in a legend; labelled
axes; y-limits that hold the data; a colour bar for every heat map; a real PNG.  Plus the
palette itself: every family the project knows has its own colour-blind-safe colour."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.image import AxesImage, imread  # noqa: E402

from vitlib import registry  # noqa: E402
from vitlib.models.registry import FAMILIES  # noqa: E402
from vitlib.plots import style  # noqa: E402
from vitlib.plots.attention_maps import CLASS_COLORS, average_map_figure  # noqa: E402
from vitlib.tables import tidy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: model id → (family, depth): the demo's supervised model (family ``timm``, once drawn in
#: nearly MAE's blue), a DINO S/16 and a deeper MAE B/32 (size and patch in their ids).
MODELS = {"demo_sup": ("timm", 4), "dino_s16": ("dino", 4), "mae_b32": ("mae", 6)}
HEADS = 3
GRID = 4  # token-grid edge of the synthetic models
DATASET = "synth"

Data = list[tuple[str, Any]]  # (file name, long table or npz arrays)


# ----------------------------------------------------------------- synthetic tables
def _layers(depth: int, *cols: tuple[str, list[Any]]) -> pd.DataFrame:
    """Every combination of ``layer`` (0..depth-1) with the given coordinate values."""
    names = ["layer", *(c for c, _ in cols)]
    rows = itertools.product(range(depth), *(v for _, v in cols))
    return pd.DataFrame(list(rows), columns=names)


def _per_model(
    name: str,
    make: Callable[[str, int, np.random.Generator], pd.DataFrame],
    settings: dict[str, Any] | None = None,
) -> Data:
    """One table per model, stamped as :func:`vitlib.registry.run_table` does."""
    a = registry.get(name)
    rng = np.random.default_rng(0)
    out = []
    for model, (family, depth) in MODELS.items():
        ident = {"dataset": DATASET, "view": "center", "model": model, "family": family}
        ident["depth"] = depth
        raw = make(model, depth, rng)
        t = tidy(raw, analysis=name, metrics=a.metrics, settings=settings, identity=ident)
        out.append((f"{model}.csv", t))
    return out


def _long(t: pd.DataFrame, metrics: dict[str, Callable[[int], np.ndarray]]) -> pd.DataFrame:
    """Rows of ``t`` once per metric with values from ``metrics[m](len(t))``."""
    return pd.concat([t.assign(metric=m, value=f(len(t))) for m, f in metrics.items()])


def _attention_distance() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("head", list(range(HEADS))))
        return t.assign(
            std=0.01, n_images=8, metric="attention_distance", value=rng.uniform(0.1, 0.8, len(t))
        )

    return _per_model("attention_distance", make, {"units": "normalised"})


def _head_metrics() -> Data:
    names = ["attention_distance", "null_row_fraction", "offset", "offset_x", "offset_y"]
    names.append("spatial_cls_attention")

    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("head", list(range(HEADS))), ("metric", names))
        return t.assign(n_images=8, value=rng.uniform(-1, 1, len(t)))

    settings = {"aaam_normaliser": "per_image", "spatial_cls_key": "cls"}
    return _per_model("head_metrics", make, settings)


def _head_taxonomy() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("head", list(range(HEADS))))
        return t.assign(
            direction="",
            **{"class": rng.choice(list(CLASS_COLORS), len(t))},
            offset_rows=rng.integers(-2, 3, len(t)),
            offset_cols=rng.integers(-2, 3, len(t)),
        )

    taxonomy = {"strict_mass": 0.7, "local_mass": 0.5, "axial_mass": 0.6, "soft_radius": 3}
    return _per_model("head_taxonomy", make, {"taxonomy": taxonomy})


def _artifact_tokens() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth).assign(num_prefix_tokens=1, n_images=8)
        return _long(
            t,
            {
                "outlier_fraction": lambda n: rng.uniform(0, 0.05, n),
                "cls_attention_share": lambda n: rng.uniform(0, 0.6, n),
            },
        )

    return _per_model("artifact_tokens", make, {"norm_factor": 3.0})


def _attention_entropy() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("head", list(range(HEADS))), ("query", ["cls", "spatial"]))
        uniform = float(np.log(1 + GRID * GRID))
        return _long(
            t.assign(n_images=8),
            {
                "entropy": lambda n: rng.uniform(0.3, uniform, n),
                "uniform_entropy": lambda n: np.full(n, uniform),
            },
        )

    return _per_model("attention_entropy", make)


def _cka() -> Data:
    rng = np.random.default_rng(0)
    out = []
    names = list(MODELS)
    for a, b in itertools.combinations_with_replacement(range(len(names)), 2):
        mx, my = names[a], names[b]
        (fx, lx), (fy, ly) = MODELS[mx], MODELS[my]
        i, j = np.meshgrid(np.arange(2 * lx), np.arange(2 * ly), indexing="ij")
        grid = rng.uniform(0, 1, i.shape)
        if a == b:
            grid = (grid + grid.T) / 2
            np.fill_diagonal(grid, 1.0)
        raw = pd.DataFrame(
            {
                "model_x": mx,
                "model_y": my,
                "family_x": fx,
                "family_y": fy,
                "row": i.ravel(),
                "col": j.ravel(),
                "point_x": np.where(i.ravel() % 2, "norm2", "norm1"),
                "layer_x": i.ravel() // 2,
                "point_y": np.where(j.ravel() % 2, "norm2", "norm1"),
                "layer_y": j.ravel() // 2,
                "metric": "cka",
                "value": grid.ravel(),
            }
        )
        t = tidy(
            raw,
            analysis="cka",
            settings={"points": "norm", "kind": "all", "minmax": False},
            identity={"dataset": DATASET, "view": "center"},
        )
        out.append((f"{mx}__{my}.csv", t))
    return out


def _similarity() -> Data:
    """The similarity suite's table: every measure, both kinds, every model pair with a
    null; the noise-like pair (demo_sup, mae_b32) is not significant."""
    from vitlib.metrics.similarity_suite import DISTANCES, SUITE_MEASURES
    from vitlib.metrics.tables import _best, _bh

    rng = np.random.default_rng(0)
    frames = []
    for mx, my in itertools.combinations_with_replacement(MODELS, 2):
        (fx, lx), (fy, ly) = MODELS[mx], MODELS[my]
        i, j = np.meshgrid(np.arange(lx), np.arange(ly), indexing="ij")
        for kind in ("cls", "spatial_mean"):
            for m in SUITE_MEASURES:
                v = rng.uniform(0.1, 0.9, i.shape) * (np.pi / 2 if m in DISTANCES else 1)
                p = rng.uniform(0.0, 0.04, i.shape)
                if (mx, my) == ("demo_sup", "mae_b32"):
                    p = rng.uniform(0.2, 1.0, i.shape)
                frames.append(
                    pd.DataFrame(
                        {
                            "model_x": mx,
                            "model_y": my,
                            "family_x": fx,
                            "family_y": fy,
                            "kind": kind,
                            "metric": m,
                            "layer_x": i.ravel(),
                            "layer_y": j.ravel(),
                            "value": v.ravel(),
                            "null_mean": 0.1,
                            "null_std": 0.05,
                            "z": (v.ravel() - 0.1) / 0.05,
                            "p": p.ravel(),
                            "q": _bh(p.ravel()),
                            "best_for_x": _best(v, 1, m in DISTANCES).ravel(),
                            "best_for_y": _best(v, 0, m in DISTANCES).ravel(),
                        }
                    )
                )
    raw = pd.concat(frames, ignore_index=True)
    raw["significant"] = raw["q"] <= 0.05
    raw["n_images"] = 500
    raw["permutations"] = 100
    t = tidy(
        raw,
        analysis="similarity",
        settings={"permutations": 100, "alpha": 0.05},
        identity={"dataset": DATASET, "view": "center"},
    )
    return [("similarity.csv", t)]


def _cka_last_layer() -> Data:
    rng = np.random.default_rng(0)
    rows = []
    for kind in ("all", "cls", "spatial"):
        for mx, my in itertools.combinations_with_replacement(MODELS, 2):
            v = 1.0 if mx == my else float(rng.uniform(0.1, 0.9))
            for x, y in {(mx, my), (my, mx)}:
                rows.append(
                    {
                        "model_x": x,
                        "model_y": y,
                        "family_x": MODELS[x][0],
                        "family_y": MODELS[y][0],
                        "kind": kind,
                        "metric": "cka",
                        "value": v,
                    }
                )
    t = tidy(
        pd.DataFrame(rows),
        analysis="cka_last_layer",
        settings={"minmax": False},
        identity={"dataset": DATASET, "view": "center"},
    )
    return [(f"{DATASET}.csv", t)]


def _residual() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        frames = []
        for sub in ("attn", "mlp"):
            i, j = np.meshgrid(np.arange(depth), np.arange(depth), indexing="ij")
            frames.append(
                pd.DataFrame(
                    {
                        "sub_block": sub,
                        "metric": "cka",
                        "layer_x": i.ravel(),
                        "layer_y": j.ravel(),
                        "value": rng.uniform(0, 1, i.size),
                    }
                )
            )
            for kind in ("all", "cls", "spatial"):
                frames.append(
                    pd.DataFrame(
                        {
                            "sub_block": sub,
                            "metric": f"norm_ratio_{kind}",
                            "layer_x": np.arange(depth),
                            "layer_y": -1,
                            "value": rng.uniform(0.05, 20, depth),
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)

    return _per_model("residual", make, {"minmax": False})


_SCORES = ("purity", "nmi", "ari")
_CLUSTER = {"seed": 0, "n_init": 3, "noise": "gaussian"}


def _scores(t: pd.DataFrame, rng: np.random.Generator, lo: float = 0.2) -> pd.DataFrame:
    return _long(t, {m: (lambda n, lo=lo: rng.uniform(lo, 1, n)) for m in _SCORES})


def _clustering() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        feats = _scores(_layers(depth, ("feature", ["cls", "spatial"])), rng)
        noise = _scores(pd.DataFrame({"layer": [-1], "feature": ["noise"]}), rng, lo=0.0)
        return pd.concat([feats, noise]).assign(n_images=8)

    return _per_model("clustering", make, {"k": 4, **_CLUSTER})


def _segments() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        feats = _scores(_layers(depth, ("feature", ["pooled"])), rng)
        noise = _scores(pd.DataFrame({"layer": [-1], "feature": ["noise"]}), rng, lo=0.0)
        return pd.concat([feats, noise]).assign(level="part", n_segments=40)

    return _per_model("segments", make, {"k": 6, **_CLUSTER})


def _saliency() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        heads = _layers(depth, ("query", ["cls", "spatial"]), ("head", list(range(HEADS))))
        heads = heads.assign(head_selection="head", iou=rng.uniform(0.2, 0.6, len(heads)))
        best = heads.loc[heads.groupby(["layer", "query"])["iou"].idxmax()]
        per_layer = best.assign(head_selection="per_layer")
        per_image = best.assign(head_selection="per_image", head=-1, iou=best["iou"] + 0.05)
        return pd.concat([heads, per_layer, per_image]).assign(n_images=8)

    return _per_model("saliency", make, {"mass": 0.6})


def _retrieval() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("protocol", ["medium", "hard"]))
        hard = np.where(t["protocol"] == "hard", 0.5, 1.0)
        return t.assign(
            **{"mp@1": 50.0, "mp@5": 30.0, "mp@10": 20.0},
            n_db=32,
            n_queries=4,
            map=rng.uniform(10, 60, len(t)) * hard,
        )

    return _per_model("retrieval", make)


def _davis() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth).assign(n_sequences=2, n_objects=3)
        t["J"] = rng.uniform(20, 60, len(t))
        t["F"] = rng.uniform(20, 70, len(t))
        return t.assign(JF=(t["J"] + t["F"]) / 2)

    settings = {"n_last": 7, "radius": 12, "topk": 5, "temperature": 0.1}
    return _per_model("davis", make, settings)


def _davis_normal() -> Data:
    return [(f, t.assign(analysis="davis_normal", view="squash")) for f, t in _davis()]


def _spair() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, ("alpha", [0.1, 0.05, 0.01]), ("category", ["cross", "star"]))
        t = t.assign(n_pairs=12, pck=rng.uniform(0, 100, len(t)) * t["alpha"] * 10)
        mean = t.groupby(["layer", "alpha"], as_index=False)["pck"].mean()
        return pd.concat([t, mean.assign(category="all", n_pairs=24)], ignore_index=True)

    return _per_model("spair", make, {"alphas": [0.1, 0.05, 0.01], "reference": "bbox"})


def _classification(
    name: str, coords: tuple[tuple[str, list[Any]], ...], ci: bool = False, **settings: Any
) -> Data:
    classes = 4  # top-5 of four classes is certain: chance is 100 %, not 125 %

    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth, *coords).assign(train=DATASET, test=f"{DATASET}_val")
        top1 = rng.uniform(30, 90, len(t))
        t = t.assign(top1=top1, top5=np.minimum(100, top1 + 10), chance=100.0 / classes)
        if ci:  # bootstrap intervals (the k-NN table's)
            for m in ("top1", "top5"):
                t[f"{m}_ci_low"], t[f"{m}_ci_high"] = t[m] - 4.0, np.minimum(100, t[m] + 4.0)
        return t

    return _per_model(name, make, settings)


def _knn() -> Data:
    return _classification(
        "knn", (("k", [10, 20]),), ci=True, ks=[10, 20], temperature=0.07, feature="cls"
    )


def _probe() -> Data:
    coords = (("feature", ["cls", "spatial_mean"]), ("batchnorm", [False, True]))
    return _classification("probe", coords, epochs=5, lr=0.1, batch_size=64, seed=0)


def _attention_maps() -> Data:
    rng = np.random.default_rng(0)
    out = []
    for model, (_, depth) in MODELS.items():
        shape = (depth, HEADS, 1 + GRID * GRID)
        maps = {m: rng.dirichlet(np.ones(shape[-1]), shape[:2]) for m in ("all", "spatial", "cls")}
        maps["spatial_pure"] = maps["spatial"]
        maps["aligned"] = rng.uniform(0, 1, (depth, HEADS, 2 * GRID - 1, 2 * GRID - 1))
        maps["null_rows"] = np.zeros((depth, HEADS))
        out.append((f"{model}.npz", maps))
    return out


def _attention_images() -> Data:
    rng = np.random.default_rng(0)
    out = []
    for model, (_, depth) in MODELS.items():
        n = 2
        out.append(
            (
                f"{model}.npz",
                {
                    "cls": rng.uniform(0, 1, (n, depth, HEADS, GRID, GRID)).astype(np.float32),
                    "spatial": rng.uniform(0, 1, (n, depth, HEADS, GRID, GRID)).astype(np.float32),
                    "index": np.arange(n),
                    "image": rng.integers(0, 255, (n, 8 * GRID, 8 * GRID, 3), dtype=np.uint8),
                    "ids": np.array([f"img{i}" for i in range(n)]),
                    "model": np.array(model),
                    "queries": rng.uniform(0, 1, (n, depth, HEADS, 3, GRID, GRID)).astype(
                        np.float32
                    ),
                    "query_names": np.array(["top", "center", "diagonal_0"]),
                    "query_yx": np.array([[0, 1], [1, 1], [0, 0]]),
                },
            )
        )
    return out


def _dense_probe() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth)
        out = t.assign(classes=5, n_test_images=4)
        for m in ("miou", "miou_fg", "acc"):
            v = rng.uniform(0.1, 0.8, len(t))
            out = out.assign(**{m: v, f"{m}_ci_low": v - 0.05, f"{m}_ci_high": v + 0.05})
        return out

    return _per_model("dense_probe", make, {"test_fraction": 0.3})


def _artifact_locality() -> Data:
    def make(model: str, depth: int, rng: np.random.Generator) -> pd.DataFrame:
        t = _layers(depth)
        return _long(
            t,
            {
                "position_error_normal": lambda n: rng.uniform(0.5, 2, n),
                "position_error_artifact": lambda n: rng.uniform(1, 4, n),
                "artifact_fraction": lambda n: rng.uniform(0, 0.05, n),
            },
        )

    return _per_model("artifact_locality", make, {"norm_factor": 3.0})


def _pca_maps() -> Data:
    rng = np.random.default_rng(0)
    return [
        (
            f"{model}.npz",
            {
                "rgb": rng.uniform(0, 1, (depth, HEADS, GRID, GRID + 1, 3)).astype(np.float32),
                "grid": np.array([[GRID, GRID + 1]] * HEADS),
                "index": np.arange(HEADS),
                "model": np.array(model),
            },
        )
        for model, (_, depth) in MODELS.items()
    ]


#: analysis → its synthetic tables (an analysis missing here fails every test of its figures)
SYNTHETIC: dict[str, Callable[[], Data]] = {
    "attention_distance": _attention_distance,
    "attention_maps": _attention_maps,
    "head_metrics": _head_metrics,
    "head_taxonomy": _head_taxonomy,
    "artifact_tokens": _artifact_tokens,
    "attention_entropy": _attention_entropy,
    "attention_images": _attention_images,
    "cka": _cka,
    "cka_last_layer": _cka_last_layer,
    "similarity": _similarity,
    "residual": _residual,
    "clustering": _clustering,
    "saliency": _saliency,
    "segments": _segments,
    "dense_probe": _dense_probe,
    "pca_maps": _pca_maps,
    "artifact_locality": _artifact_locality,
    "retrieval": _retrieval,
    "davis": _davis,
    "davis_normal": _davis_normal,
    "spair": _spair,
    "knn": _knn,
    "probe": _probe,
}

#: figures of per-layer curves → the number of panels that hold one curve per model
CURVE_PANELS = {
    "attention_distance": 2,
    "attention_entropy": 2,
    "artifact_tokens": 2,
    "clustering": 6,
    "saliency": 2,
    "segments": 3,
    "dense_probe": 3,
    "artifact_locality": 3,
    "retrieval": 2,
    "davis": 3,
    "spair": 3,
    "knn": 2,
    "probe": 4,
}
#: per-model figures (drawn for one model): layers × heads grids of attention maps
MAP_GRIDS = {"attention_maps_cls", "attention_maps_spatial", "attention_maps_aligned"}
PER_MODEL_MODEL = "mae_b32"
#: composites of several models' maps (paper Figures 2, 3, 13, 14)
COMPOSITES = {"attention_heads_cls", "local_heads", "offset_heads", "attention_samples"}
#: figures with one panel (or column of panels) per model, titled by the model
MODEL_PANELS = {"attention_offset", "head_taxonomy", "residual", "cka_grids"}


# ----------------------------------------------------------------- drawing
@pytest.fixture()
def kept(monkeypatch):
    """The figures save_figure would close, kept open for inspection (closed afterwards)."""
    figs: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    for f in figs:
        close(f)


def draw(name: str, tmp_path: Path, kept: list[Any], layout: str = "main") -> tuple[Any, Path]:
    a, f = registry.figures()[name]
    inputs = []
    for other in (a.name, *f.extra):  # the figure's analysis, then the others it reads
        assert other in SYNTHETIC, f"no synthetic tables for analysis {other} (figure {name})"
        for fname, data in SYNTHETIC[other]():
            path = tmp_path / "tables" / other / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            if registry.get(other).output == "npz":
                np.savez(path, **data)
            else:
                data.to_csv(path, index=False)
            inputs.append(str(path))
    model = None
    if f.per_model:
        inputs = [p for p in inputs if Path(p).stem == PER_MODEL_MODEL]
        model = PER_MODEL_MODEL
    png = tmp_path / "figures" / f"{name}.png"
    registry.draw_figure(
        name, inputs, [str(png)], dpi=60, models=list(MODELS), model=model, layout=layout
    )
    assert len(kept) == 1, f"{name}: expected one figure saved and closed, got {len(kept)}"
    return kept[0], png


# ----------------------------------------------------------------- inspection helpers
def colorbars(fig: Any) -> list[Any]:
    out = []
    for ax in fig.axes:
        for m in [*ax.images, *ax.collections]:
            cb = getattr(m, "colorbar", None)
            if cb is not None and cb not in out:
                out.append(cb)
    return out


def data_axes(fig: Any) -> list[Any]:
    """Visible axes that are not colour bars."""
    bars = {cb.ax for cb in colorbars(fig)}
    return [ax for ax in fig.axes if ax not in bars and ax.axison]


def heat_maps(ax: Any) -> list[Any]:
    """Scalar-mapped artists of ``ax``: 2-D images and scatters coloured by value."""
    out = [im for im in ax.images if isinstance(im, AxesImage) and im.get_array().ndim == 2]
    return out + [c for c in ax.collections if c.get_array() is not None]


def model_lines(ax: Any) -> list[Any]:
    return [ln for ln in ax.lines if ln.get_label() in MODELS]


def legend_texts(fig: Any) -> set[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return {t.get_text() for lg in [*legends, *fig.legends] for t in lg.get_texts()}


def has_ylabel(ax: Any) -> bool:
    shared = ax.get_shared_y_axes().get_siblings(ax)
    return any(s.get_ylabel().strip() for s in [ax, *shared])


def has_xlabel(ax: Any) -> bool:
    """An x label on ``ax`` or, for a column of panels sharing x, on one of them."""
    shared = ax.get_shared_x_axes().get_siblings(ax)
    return any(s.get_xlabel().strip() for s in [ax, *shared])


def figure_texts(fig: Any) -> str:
    texts = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
    texts += [ax.get_ylabel() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    return "\n".join(texts)


# ----------------------------------------------------------------- the tests
FIGURES = sorted(registry.figures())


def test_every_analysis_has_synthetic_tables():
    assert {a.name for a, _ in registry.figures().values()} <= set(SYNTHETIC)


@pytest.mark.parametrize("name", FIGURES)
def test_figure_renders_a_real_png(name, tmp_path, kept):
    _, png = draw(name, tmp_path, kept)
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000, f"{name}: {len(raw)} bytes"
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05, f"{name}: a nearly blank image"


APPENDIX = sorted(n for n, (_, f) in registry.figures().items() if f.appendix)


@pytest.mark.parametrize("name", APPENDIX)
def test_appendix_layout_is_one_column_per_family_against_normalised_depth(name, tmp_path, kept):
    """The paper's appendix figures: each panel holds the models of one family only, every
    family has its panels, and x is the normalised depth (every curve within (0, 1])."""
    fig, png = draw(name, tmp_path, kept, layout="appendix")
    assert png.stat().st_size > 5000
    if name in COMPOSITES:  # every model, not per family
        assert all(m in figure_texts(fig) for m in MODELS), f"{name}: a model missing"
        return
    families = {fam for fam, _ in MODELS.values()}
    seen: dict[str, int] = {}
    for ax in data_axes(fig):
        lines = model_lines(ax)
        if not lines:
            continue
        fams = {MODELS[ln.get_label()][0] for ln in lines}
        assert len(fams) == 1, f"{name} / {ax.get_title()!r}: families {fams} on one panel"
        fam = fams.pop()
        assert fam in ax.get_title(), f"{name}: panel {ax.get_title()!r} does not name {fam}"
        assert sorted(ln.get_label() for ln in lines) == sorted(
            m for m, (f, _) in MODELS.items() if f == fam
        )
        for ln in lines:
            x = np.asarray(ln.get_xdata(), float)
            assert 0 < x.min() and x.max() == pytest.approx(1.0), f"{name}: x {x}"
        assert "normalised depth" in ax.get_xlabel()
        seen[fam] = seen.get(fam, 0) + 1
    assert set(seen) == families, f"{name}: panels for {set(seen)}, families {families}"
    assert len(set(seen.values())) == 1, f"{name}: panels per family {seen}"


@pytest.mark.parametrize("name", FIGURES)
def test_axes_are_labelled_and_models_named(name, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    axes = data_axes(fig)
    assert axes, f"{name}: no axes"
    if name in COMPOSITES:  # image grids: every model named in a title or label
        assert all(m in figure_texts(fig) for m in MODELS), f"{name}: a model missing"
        return
    if name in MAP_GRIDS or name in ("attention_images", "attention_queries", "pca_maps"):
        # cells without ticks: rows named by layer, columns by head, the model in the title
        rows = [ax for ax in axes if ax.get_ylabel()]
        depth = MODELS[PER_MODEL_MODEL][1]
        assert [ax.get_ylabel() for ax in rows][:depth] == [f"L{i + 1}" for i in range(depth)]
        assert sum(bool(ax.get_title()) for ax in axes) >= HEADS
        assert PER_MODEL_MODEL in fig.get_suptitle()
        return
    for ax in axes:
        assert has_xlabel(ax), f"{name}: a panel without x label ({ax.get_title()!r})"
        assert has_ylabel(ax), f"{name}: a panel without y label ({ax.get_title()!r})"
    if name in CURVE_PANELS:
        missing = set(MODELS) - legend_texts(fig)
        assert not missing, f"{name}: models {missing} not in a legend"
    else:
        text = figure_texts(fig) + "\n".join(legend_texts(fig))
        assert all(m in text for m in MODELS), f"{name}: a model is named nowhere"


@pytest.mark.parametrize("name", sorted(CURVE_PANELS))
def test_curves_one_per_model_in_the_family_colour(name, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    panels = [ax for ax in data_axes(fig) if model_lines(ax)]
    assert len(panels) == CURVE_PANELS[name], f"{name}: {len(panels)} panels with curves"
    for ax in panels:
        lines = model_lines(ax)
        labels = [ln.get_label() for ln in lines]
        assert sorted(labels) == sorted(MODELS), f"{name} / {ax.get_title()}: {labels}"
        for ln in lines:
            family = MODELS[ln.get_label()][0]
            expected = style.model_style(ln.get_label(), family)
            assert to_hex(ln.get_color()) == style.FAMILY_COLORS[family].lower()
            assert ln.get_linestyle() == expected["linestyle"]
            assert ln.get_marker() == expected["marker"]
            # the axis limits hold the curve
            x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
            assert np.isfinite(y).all() and len(y) > 1
            lo, hi = sorted(ax.get_ylim())
            assert lo <= y.min() and y.max() <= hi, f"{name}: y {y} outside {lo, hi}"
            lo, hi = sorted(ax.get_xlim())
            assert lo <= x.min() and x.max() <= hi
        # reference lines (chance, noise, uniform attention) are inside the limits too
        for ln in ax.lines:
            y = np.asarray(ln.get_ydata(), float)
            lo, hi = sorted(ax.get_ylim())
            assert lo <= y.min() and y.max() <= hi, f"{name}: {ln.get_label()} off the axes"
        colors = {to_hex(ln.get_color()) for ln in lines}
        assert len(colors) == len(MODELS), f"{name}: families share a colour"
    if name in ("knn", "probe"):  # accuracies (and their chance levels) are percentages
        for ax in panels:
            assert all(
                0 <= np.min(ln.get_ydata()) and np.max(ln.get_ydata()) <= 100 for ln in ax.lines
            ), f"{name}: a line beyond 100 %"


@pytest.mark.parametrize(
    "name",
    sorted(
        {
            "cka_grids",
            "cka_last_layer",
            "residual",
            "attention_offset",
            "attention_images",
            "attention_queries",
        }
        | MAP_GRIDS
        | COMPOSITES
    ),
)
def test_heat_maps_have_a_colour_bar(name, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    bars = colorbars(fig)
    assert bars, f"{name}: heat maps without a colour bar"
    assert all(cb.ax.get_ylabel().strip() or cb.ax.get_xlabel().strip() for cb in bars), (
        f"{name}: a colour bar without label"
    )
    keys = {(cb.mappable.get_cmap().name, *np.round(cb.mappable.get_clim(), 6)) for cb in bars}
    maps = [m for ax in data_axes(fig) for m in heat_maps(ax)]
    assert maps, f"{name}: no heat map drawn"
    for m in maps:  # every heat map reads off one of the colour bars
        key = (m.get_cmap().name, *np.round(m.get_clim(), 6))
        assert key in keys, f"{name}: a heat map {key} that no colour bar explains ({keys})"


@pytest.mark.parametrize(
    "name, edge",
    [
        ("attention_maps_cls", GRID),
        ("attention_maps_spatial", GRID),
        ("attention_maps_aligned", 2 * GRID - 1),
    ],
)
def test_map_grids_hold_every_layer_and_head(name, edge, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    maps = [m for ax in data_axes(fig) for m in heat_maps(ax)]
    assert len(maps) == MODELS[PER_MODEL_MODEL][1] * HEADS
    for m in maps:  # pre-scaled per cell
        a = np.asarray(m.get_array())
        assert a.shape == (edge, edge) and a.min() >= 0 and a.max() <= 1


def test_single_image_grid_shows_the_crop_and_every_map(tmp_path, kept):
    fig, _ = draw("attention_images", tmp_path, kept)
    depth = MODELS[PER_MODEL_MODEL][1]
    images = [im for ax in fig.axes for im in ax.images]
    rgb = [im for im in images if im.get_array().ndim == 3]
    assert len(rgb) == 2  # one crop per image
    # images × layers × (CLS, spatial) × heads
    assert len(images) - len(rgb) == 2 * depth * 2 * HEADS


def test_query_grid_shows_each_named_query_of_one_head_per_block(tmp_path, kept):
    """Positional queries: per image the crop, then blocks × named queries (the diagonal
    query left out when named ones exist) of head 1, pre-scaled, the query token outlined."""
    fig, _ = draw("attention_queries", tmp_path, kept)
    z = _npz("attention_images")[PER_MODEL_MODEL]
    depth = MODELS[PER_MODEL_MODEL][1]
    rgb = [im for ax in fig.axes for im in ax.images if im.get_array().ndim == 3]
    assert len(rgb) == 2
    cells = [ax for ax in fig.axes if any(im.get_array().ndim == 2 for im in ax.images)]
    assert len(cells) == 2 * depth * 2  # images × blocks × (top, center)
    titles = [ax.get_title() for ax in cells if ax.get_title()]
    assert titles == ["top", "center"] * 2
    # image 1, block 3, query 'center' (index 1), head 1 (index 0)
    cols = 2
    ax = cells[(3 - 1) * 2 * cols + cols + 1]
    want = z["queries"][1, 2, 0, 1]
    want = (want - want.min()) / (want.max() - want.min())
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), want, rtol=1e-6)
    (box,) = ax.patches  # the query token (row 1, col 1)
    assert box.get_xy() == (0.5, 0.5)


def test_cka_grids_are_a_models_by_models_matrix_of_pairs(tmp_path, kept):
    """Row ``i`` has model ``i``'s layers along y, column ``j`` model ``j``'s along x: the
    upper triangle from the pair tables, the lower their transposed mirror (no empty cells)."""
    fig, _ = draw("cka_grids", tmp_path, kept)
    names = list(MODELS)
    panels = {ax.get_title(): ax for ax in data_axes(fig) if ax.images}
    assert sorted(panels) == sorted(f"{y} × {x}" for y in names for x in names)
    for y, x in itertools.product(names, names):
        grid = np.asarray(panels[f"{y} × {x}"].images[0].get_array())
        assert grid.shape == (2 * MODELS[y][1], 2 * MODELS[x][1])
        np.testing.assert_array_equal(
            grid, np.asarray(panels[f"{x} × {y}"].images[0].get_array()).T
        )
    assert not [ax for ax in fig.axes if not ax.axison], "an empty panel"


def test_cka_grid_axes_are_1_based_blocks_named_by_model(tmp_path, kept):
    fig, _ = draw("cka_grids", tmp_path, kept)
    fig.canvas.draw()
    panels = {ax.get_title(): ax for ax in data_axes(fig) if ax.images}
    names = list(MODELS)
    last = len(names) - 1
    for (r, y), (c, x) in itertools.product(enumerate(names), enumerate(names)):
        ax = panels[f"{y} × {x}"]
        # tick labels show on the outer panels (rows and columns share their axes)
        for axis, model, outer in ((ax.yaxis, y, c == 0), (ax.xaxis, x, r == last)):
            depth = MODELS[model][1]
            # a major tick per block, at the centre of its two capture points...
            np.testing.assert_allclose(axis.get_ticklocs(), 2 * np.arange(depth) + 0.5)
            # ... and a minor tick at every capture point (norm1, norm2)
            np.testing.assert_allclose(axis.get_ticklocs(minor=True), np.arange(2 * depth))
            if outer:  # labelled with the 1-based block index
                labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible()]
                assert labels == [str(i + 1) for i in range(depth)], (y, x, labels)
    # outer panels name the model whose blocks run along the axis
    col0 = [ax for ax in panels.values() if ax.get_subplotspec().colspan.start == 0]
    assert {ax.get_ylabel() for ax in col0} == {f"{m}: block" for m in names}
    bottom = [ax for ax in panels.values() if ax.get_subplotspec().rowspan.start == last]
    assert {ax.get_xlabel() for ax in bottom} == {f"{m}: block" for m in names}
    assert "norm1" in fig.get_suptitle() and "n1, n2" in fig.get_suptitle()


def test_cka_grids_have_one_colour_bar_and_little_white_space(tmp_path, kept):
    fig, _ = draw("cka_grids", tmp_path, kept)
    fig.canvas.draw()
    (bar,) = colorbars(fig)
    assert bar.ax.get_ylabel() == "CKA" and tuple(bar.mappable.get_clim()) == (0, 1)
    maps = [im for ax in data_axes(fig) for im in ax.images]
    assert {tuple(im.get_clim()) for im in maps} == {(0, 1)}
    # the panels' bounding box spans most of the figure (no empty triangle, no wide margins)
    boxes = [ax.get_position() for ax in data_axes(fig)]
    x0, x1 = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    assert (x1 - x0) > 0.75 and (y1 - y0) > 0.75, (x0, x1, y0, y1)
    assert sum(b.width * b.height for b in boxes) > 0.45


def test_last_layer_cka_is_models_by_models(tmp_path, kept):
    fig, _ = draw("cka_last_layer", tmp_path, kept)
    panels = [ax for ax in data_axes(fig) if ax.images]
    assert len(panels) == 3  # all, CLS and spatial tokens
    for ax in panels:
        grid = np.asarray(ax.images[0].get_array())
        assert grid.shape == (len(MODELS), len(MODELS))
        np.testing.assert_allclose(np.diag(grid), 1.0)
        np.testing.assert_allclose(grid, grid.T)
        assert [t.get_text() for t in ax.get_xticklabels()] == list(MODELS)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(MODELS)


def test_residual_has_two_grids_and_norm_ratios_per_model(tmp_path, kept):
    fig, _ = draw("residual", tmp_path, kept)
    axes = data_axes(fig)
    grids = [ax for ax in axes if ax.images]
    ratios = [ax for ax in axes if ax.lines]
    assert len(grids) == 2 * len(MODELS) and len(ratios) == len(MODELS)
    for ax in grids:
        model = ax.get_title().split(":")[0]
        depth = MODELS[model][1]
        assert ax.images[0].get_array().shape == (depth, depth)
    for ax in ratios:
        assert ax.get_yscale() == "log" and len(ax.lines) == 4  # attn / mlp × CLS / spatial
        assert {t.get_text() for t in ax.get_legend().get_texts()} == {
            "attn cls",
            "attn spatial",
            "mlp cls",
            "mlp spatial",
        }


def test_residual_grids_share_one_0_to_1_colour_bar(tmp_path, kept):
    fig, _ = draw("residual", tmp_path, kept)
    (bar,) = colorbars(fig)
    assert "CKA" in bar.ax.get_ylabel() and tuple(bar.mappable.get_clim()) == (0, 1)
    grids = [im for ax in data_axes(fig) for im in ax.images]
    assert len(grids) == 2 * len(MODELS)
    assert {(im.get_cmap().name, *im.get_clim()) for im in grids} == {("magma", 0, 1)}
    for ax in data_axes(fig):  # 1-based block indices on the grids' axes
        if ax.images:
            assert [t.get_text() for t in ax.get_xticklabels()][0] == "1"
            assert [t.get_text() for t in ax.get_yticklabels()][0] == "1"
    # one norm-ratio scale for every model
    ratios = [ax for ax in data_axes(fig) if ax.lines]
    assert len({ax.get_ylim() for ax in ratios}) == 1


def test_taxonomy_bars_count_every_head(tmp_path, kept):
    fig, _ = draw("head_taxonomy", tmp_path, kept)
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == list(MODELS)
    palette = {to_hex(c) for c in CLASS_COLORS.values()}
    for ax in axes:
        totals: dict[float, float] = {}
        for bar in ax.patches:
            assert to_hex(bar.get_facecolor()) in palette
            x = round(bar.get_x() + bar.get_width() / 2, 6)
            totals[x] = totals.get(x, 0) + bar.get_height()
        depth = MODELS[ax.get_title()][1]
        assert len(totals) == depth and set(totals.values()) == {HEADS}
        assert ax.get_ylim()[1] >= HEADS


def test_offsets_show_every_head_coloured_by_layer(tmp_path, kept):
    fig, _ = draw("attention_offset", tmp_path, kept)
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == list(MODELS)
    for ax in axes:
        (points,) = ax.collections
        depth = MODELS[ax.get_title()][1]
        assert len(points.get_offsets()) == depth * HEADS
        assert sorted(set(points.get_array())) == list(range(1, depth + 1))
    assert {cb.ax.get_ylabel() for cb in colorbars(fig)} == {"layer"}


def test_offsets_share_one_symmetric_range_with_the_origin_marked(tmp_path, kept):
    fig, _ = draw("attention_offset", tmp_path, kept)
    axes = data_axes(fig)
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in axes}
    assert len(limits) == 1, f"panels scaled separately: {limits}"
    ((xlo, xhi), (ylo, yhi)) = limits.pop()
    assert xlo == -xhi and ylo == -yhi and xhi == yhi > 0  # symmetric, same for x and y
    for ax in axes:
        xy = np.asarray(ax.collections[0].get_offsets())
        assert np.abs(xy).max() <= xhi  # every head inside the shared range
        origin = [ln for ln in ax.lines if ln.get_marker() == "+"]
        assert origin and list(origin[0].get_xydata()[0]) == [0, 0], "origin not marked"
    (bar,) = colorbars(fig)  # one layer bar explains every panel
    depth = max(d for _, d in MODELS.values())
    assert tuple(bar.mappable.get_clim()) == (1, depth)
    assert {tuple(ax.collections[0].get_clim()) for ax in axes} == {(1, depth)}


def clipped(fig: Any) -> list[str]:
    """After a draw: what of ``fig`` (titles, labels, tick labels, colour bars) reaches outside
    the figure — the drawn artists' tight box against the figure's box — as text ([] if
    nothing does)."""
    fig.canvas.draw()
    tight = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    tol = 0.02
    if tight.x0 >= -tol and tight.y0 >= -tol and tight.x1 <= w + tol and tight.y1 <= h + tol:
        return []
    return [f"drawn extent {tight.bounds} beyond the figure's (0, 0, {w}, {h}) inches"]


@pytest.mark.parametrize(
    "name",
    sorted(
        MAP_GRIDS
        | COMPOSITES
        | {
            "attention_images",
            "attention_queries",
            "attention_offset",
            "cka_grids",
            "residual",
            "davis_views",
        }
    ),
)
def test_no_text_is_cut_at_the_figure_edge(name, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    assert not clipped(fig), f"{name}: {clipped(fig)}"


@pytest.mark.parametrize("kind", ["aligned", "cls", "spatial"])
def test_map_grid_titles_fit_even_for_long_model_names(kind, tmp_path, kept):
    (_, maps), *_ = [d for d in SYNTHETIC["attention_maps"]() if d[0].startswith(PER_MODEL_MODEL)]
    model = "clip_vit_large_patch14_336_openai_laion2b_finetuned"
    average_map_figure(maps, [tmp_path / "m.png"], dpi=60, kind=kind, model=model)
    (fig,) = kept
    assert not clipped(fig), clipped(fig)
    assert model in fig.get_suptitle()


@pytest.mark.parametrize("name", sorted(MAP_GRIDS | {"attention_images", "attention_queries"}))
def test_map_grids_have_a_0_to_1_prescaled_colour_bar_and_labelled_axes(name, tmp_path, kept):
    fig, _ = draw(name, tmp_path, kept)
    (bar,) = colorbars(fig)
    assert tuple(bar.mappable.get_clim()) == (0, 1)
    assert "min–max" in bar.ax.get_ylabel()
    assert "layer" in fig.get_supylabel() and "1-based" in fig.get_supylabel()
    maps = [m for ax in data_axes(fig) for m in ax.images if m.get_array().ndim == 2]
    assert {tuple(m.get_clim()) for m in maps} == {(0, 1)}


# ----------------------------------------------------------------- composites
def _npz(name: str) -> dict[str, dict[str, Any]]:
    return {f[:-4]: d for f, d in SYNTHETIC[name]()}


def test_sample_maps_are_one_head_of_the_last_block_with_the_average_row(tmp_path, kept):
    """Figure 13: rows = images + the dataset average, columns = the image, then the models;
    each cell the min–max scaled CLS map of head 1 of the last block."""
    from vitlib.plots.composites import cls_maps

    fig, _ = draw("attention_samples", tmp_path, kept)
    images, averages = _npz("attention_images"), _npz("attention_maps")
    axes = np.array(fig.axes[: 3 * (len(MODELS) + 1)]).reshape(3, len(MODELS) + 1)
    for c, model in enumerate(MODELS, start=1):
        depth = MODELS[model][1]
        assert model in axes[0, c].get_title() and f"[{depth}, 1]" in axes[0, c].get_title()
        for r in range(2):
            want = images[model]["cls"][r, depth - 1, 0]
            got = np.asarray(axes[r, c].images[0].get_array())
            np.testing.assert_allclose(
                got, (want - want.min()) / (want.max() - want.min()), atol=1e-6
            )
        avg = cls_maps(averages[model])[depth - 1, 0]
        got = np.asarray(axes[2, c].images[0].get_array())
        np.testing.assert_allclose(got, (avg - avg.min()) / (avg.max() - avg.min()), atol=1e-6)
    assert axes[0, 0].images[0].get_array().ndim == 3  # the image itself


def test_cls_heads_shows_three_heads_of_every_layer_per_model(tmp_path, kept):
    fig, _ = draw("attention_heads_cls", tmp_path, kept)
    maps = [m for ax in data_axes(fig) for m in heat_maps(ax)]
    assert len(maps) == 3 * sum(d for _, d in MODELS.values())
    assert "1-based" in fig.get_supylabel()


def test_local_heads_take_the_first_head_of_each_kind(tmp_path, kept):
    from vitlib.plots.composites import LOCAL_KINDS

    fig, _ = draw("local_heads", tmp_path, kept)
    tax = pd.concat(t for _, t in SYNTHETIC["head_taxonomy"]())
    titles = [ax.get_title().split("\n")[-1] for ax in fig.axes if ax.images]
    want = []
    for model in MODELS:
        t = (
            tax[tax.model == model]
            .drop_duplicates(["layer", "head"])
            .sort_values(["layer", "head"])
        )
        for _, classes in LOCAL_KINDS:
            pick = t[t["class"].isin(classes)]
            if len(pick):
                want.append(f"[{pick['layer'].iloc[0] + 1}, {pick['head'].iloc[0] + 1}]")
    assert titles == want
    for ax in fig.axes:
        if ax.images:  # red mid-lines through the centre
            assert sum(ln.get_color() == "red" for ln in ax.lines) == 2


def test_offset_heads_pick_the_largest_offset(tmp_path, kept):
    """Figure 14: the offset-local head with the largest offset; a model without one shows
    its largest offset of any head, and says so."""
    fig, _ = draw("offset_heads", tmp_path, kept)
    hm = pd.concat(t for _, t in SYNTHETIC["head_metrics"]())
    tax = pd.concat(t for _, t in SYNTHETIC["head_taxonomy"]()).drop_duplicates(
        ["model", "layer", "head"]
    )
    off = hm[hm.metric == "offset"].merge(tax[["model", "layer", "head", "class"]])
    panels = [a for a in fig.axes if a.images]
    assert len(panels) == len(MODELS)
    for ax in panels:
        model = ax.get_title().split("\n")[0]
        mine = off[off.model == model]
        local = mine[mine["class"] == "offset-local"]
        best = (local if len(local) else mine).sort_values("value").iloc[-1]
        assert f"[{best['layer'] + 1}, {best['head'] + 1}]" in ax.get_title()
        assert ("not offset-local" in ax.get_title()) == local.empty


def test_davis_views_draw_dense_solid_and_normal_dotted(tmp_path, kept):
    fig, _ = draw("davis_views", tmp_path, kept)
    (ax,) = fig.axes
    styles = {ln.get_label(): ln.get_linestyle() for ln in ax.lines}
    for model in MODELS:
        assert styles[f"{model} (dense)"] == "-" and styles[f"{model} (normal)"] == ":"


# ----------------------------------------------------------------- the palette
#: Machado, Oliveira & Fernandes (2009) full-severity simulation matrices (linear sRGB).
CVD = {
    "normal": np.eye(3),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "tritanopia": np.array(
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ]
    ),
}


def lab(colors: list[str], vision: str) -> np.ndarray:
    """CIELAB (D65) of ``colors`` as seen with ``vision``."""
    s = np.array([to_rgb(c) for c in colors])
    lin = np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)
    lin = np.clip(lin @ CVD[vision].T, 0, 1)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def test_every_known_family_has_its_own_palette_colour():
    families = set(FAMILIES)
    # and every family string the configs use
    for cfg in [REPO / "config.yaml", *sorted((REPO / "presets").glob("*.yaml"))]:
        data = yaml.safe_load(cfg.read_text()) or {}
        for spec in (data.get("custom_models") or {}).values():
            families.add(spec.get("family", "timm"))
    families -= style.REFERENCE_FAMILIES  # drawn dashed in the reference grey
    assert families <= set(style.FAMILY_COLORS), families - set(style.FAMILY_COLORS)
    assert style.model_style("noise_b16", "noise")["color"] == style.REFERENCE_COLOR
    colors = [c.lower() for c in style.FAMILY_COLORS.values()]
    assert len(set(colors)) == len(colors), "two families share a colour"
    palette = {c.lower() for c in [*style.TOL_MUTED.values(), *style.TOL_EXTRA.values()]}
    assert set(colors) <= palette
    for fam in style.FAMILY_COLORS:  # model_style draws in the family colour
        assert style.model_style(f"{fam}_b16", fam)["color"] == style.FAMILY_COLORS[fam]


@pytest.mark.parametrize("vision", list(CVD))
def test_family_colours_stay_apart_in_colour_blind_vision(vision):
    names = list(style.FAMILY_COLORS)
    pts = lab(list(style.FAMILY_COLORS.values()), vision)
    for i, j in itertools.combinations(range(len(names)), 2):
        d = float(np.linalg.norm(pts[i] - pts[j]))
        assert d >= 15, f"{vision}: {names[i]} and {names[j]} are ΔE {d:.1f} apart"
    white = lab(["#ffffff"], vision)[0]
    assert min(np.linalg.norm(pts - white, axis=1)) >= 20  # every line visible on white
    if vision == "normal":
        fallback = lab(list(style.FALLBACK_COLORS), vision)
        gap = min(np.linalg.norm(f - p) for f in fallback for p in pts)
        assert gap >= 20, "a fallback colour looks like a family colour"


def test_unknown_families_get_a_stable_distinct_colour():
    known = {c.lower() for c in style.FAMILY_COLORS.values()}
    first = {f: style.model_style("x", f)["color"] for f in ("ijepa", "eva", "aim")}
    # not the order of calls, not the model, not the process (hash seeds) decide
    for f in reversed(list(first)):
        assert style.model_style("other_b16", f)["color"] == first[f]
    assert not set(first.values()) & known
    code = "from vitlib.plots.style import family_color as c; print(c('ijepa'), c('eva'), c('aim'))"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert res.stdout.split() == list(first.values()), res.stderr


def test_size_is_the_marker_and_patch_the_line_style():
    s16, b16, b32, l14 = (
        style.model_style(m, "fs") for m in ("fs_s16", "fs_b16", "fs_b32", "fs_l14_336")
    )
    assert s16["color"] == b16["color"] == b32["color"] == l14["color"]
    assert (
        len({s16["marker"], b16["marker"], l14["marker"]}) == 3 and b16["marker"] == b32["marker"]
    )
    assert s16["linestyle"] == b16["linestyle"] == "-"
    assert len({b16["linestyle"], b32["linestyle"], l14["linestyle"]}) == 3
    assert style.model_style("dinov2reg_b14", "dinov2")["marker"] == b16["marker"]
    plain = style.model_style("demo_sup", "timm")
    assert plain["linestyle"] == "-" and plain["marker"]


def test_curves_with_intervals_carry_bands(tmp_path, kept):
    """A table with bootstrap intervals (k-NN) draws each model's interval as a band in its
    line's colour around the line."""
    from matplotlib.collections import PolyCollection

    fig, _ = draw("knn", tmp_path, kept)
    for ax in [a for a in data_axes(fig) if model_lines(a)]:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        lines = model_lines(ax)
        assert len(bands) == len(lines)
        for band, line in zip(bands, lines):
            assert to_hex(band.get_facecolor()[0][:3]) == to_hex(line.get_color())
            ys = band.get_paths()[0].vertices[:, 1]
            y = np.asarray(line.get_ydata(), float)
            assert ys.min() == pytest.approx(y.min() - 4.0)


def test_curves_without_intervals_have_no_bands(tmp_path, kept):
    from matplotlib.collections import PolyCollection

    fig, _ = draw("retrieval", tmp_path, kept)  # its synthetic table has no intervals
    assert not any(isinstance(c, PolyCollection) for a in data_axes(fig) for c in a.collections)
