"""The report's two figures, as PNG bytes.

Plain Python, no Dagster. matplotlib is imported inside the functions that draw, and numpy and
pandas with this module, which the Dagster code imports only inside asset bodies.
Figures use matplotlib's object-oriented ``Figure`` API with the Agg canvas (no pyplot, no
global backend state), which is safe to call from several threads.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from potato_assets.lib.process import long_lived_imports
from potato_assets.report.digest import (
    MAX_TRAJECTORY_SUBJECTS,
    FiberSample,
    TrajectorySample,
    fiber_sample,
    trajectory_sample,
)
from potato_assets.report.formatting import FIBER, coef_row, format_number, is_missing, ordered_models
from potato_assets.report.markdown import md_escape
from potato_assets.study.schema import GROUP_COL, OUTCOME, WEEK_COL

# Two-sided 95% t critical values for df = 1..30; beyond, a Cornish-Fisher expansion (error
# < 1e-5). Avoids importing scipy (slow) just for a quantile.
_T975 = np.array([
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
])  # fmt: skip


def _t_quantile_975(df: np.ndarray | float) -> np.ndarray:
    """Two-sided 95% t critical value for each (integer) df; NaN where df < 1."""
    d = np.floor(np.atleast_1d(np.asarray(df, dtype=float)))
    out = np.full(d.shape, np.nan)
    small = (d >= 1) & (d <= _T975.size)
    out[small] = _T975[d[small].astype(int) - 1]
    big = d > _T975.size
    z, v = 1.959963984540054, d[big]
    out[big] = (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )
    return out


def _grouped_mean_ci(y: pd.Series, by: pd.Series | np.ndarray) -> pd.DataFrame:
    """Per-group n, mean and 95% t-interval half-width of ``y`` (NaNs ignored)."""
    if isinstance(by, pd.Series) and isinstance(by.dtype, pd.CategoricalDtype):
        # Group on the integer codes: grouping on Interval objects (qcut bins) is ~50x slower.
        codes = by.cat.codes.to_numpy()
        g = pd.DataFrame({"y": y.to_numpy(dtype=float), "g": codes})
        g = g[codes >= 0].dropna()
        agg = g.groupby("g", sort=True)["y"].agg(["count", "mean", "std"])
        agg.index = pd.CategoricalIndex(by.cat.categories[agg.index.to_numpy()], categories=by.cat.categories)
    else:
        g = pd.DataFrame({"y": y.to_numpy(dtype=float), "g": np.asarray(by)}).dropna()
        agg = g.groupby("g", observed=True, sort=True)["y"].agg(["count", "mean", "std"])
    half = _t_quantile_975(agg["count"].to_numpy() - 1) * agg["std"].to_numpy()
    half = half / np.sqrt(agg["count"].to_numpy().astype(float))
    agg["half"] = half
    return agg


def _new_figure(width: float, height: float, dpi: int = 110) -> Any:
    with long_lived_imports():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


# Colours in a figure's palette. The PNGs are also embedded in Dagster metadata (the event log),
# so each is stored as an 8-bit palette image: ~2.5x smaller than RGBA, no visible difference.
PALETTE_COLOURS = 256


def _figure_png(fig: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as image:
        palette = image.convert("RGB").quantize(
            colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


MAX_SCATTER_POINTS = 5000


def fiber_vs_weight_change_png(modeling: pd.DataFrame | FiberSample, coefficients: Mapping[str, pd.DataFrame]) -> bytes:
    """Headline figure: weekly fiber vs next-week weight change, binned means, model slopes.

    One semi-transparent point per subject-week; black points with error bars are the mean
    weight change within each decile of fiber (95% t-interval); each model's fiber
    coefficient is drawn as a line of that slope through the sample means. The coefficient
    is a *partial* effect (other predictors held fixed), so the lines show a slope, not a
    fitted curve through these marginal points.

    ``modeling`` is the modelling table or its :class:`~potato_assets.report.digest.FiberSample`
    (built bucket by bucket): above ``digest.MAX_FIBER_SUBJECTS`` subjects the points and the
    bins come from a fixed sample of subjects; the means and ranges always from every row.
    """
    data = modeling if isinstance(modeling, FiberSample) else fiber_sample([modeling])
    fig = _new_figure(9.0, 5.4)
    # No title or footnote in the PNG: the report prints the caption once, under the figure.
    ax = fig.add_axes((0.09, 0.1, 0.88, 0.86))

    d = data.points
    have_data = data.rows > 0 and len(d) > 0

    if have_data:
        x = d[FIBER].to_numpy(dtype=float)
        y = d[OUTCOME].to_numpy(dtype=float)
        # Past a few thousand points the cloud is solid grey and slow to draw: show an evenly
        # spaced subset; the binned means still use every (sampled) subject-week.
        shown = np.unique(np.linspace(0, len(d) - 1, min(len(d), MAX_SCATTER_POINTS)).astype(int))
        label = f"Subject-weeks (n = {data.rows})"
        if shown.size < data.rows:
            label = f"Subject-weeks ({shown.size:,} of {data.rows:,} shown)"
        ax.scatter(
            x[shown],
            y[shown],
            s=14,
            color="tab:gray",
            alpha=0.35,
            linewidths=0,
            label=label,
            zorder=1,
        )
        ax.axhline(0.0, color="0.4", lw=0.8, ls=":", zorder=0)

        # Binned means over deciles of fiber (fewer bins if few distinct values).
        n_bins = int(min(10, np.unique(x).size))
        if n_bins >= 2 and len(d) >= 3:
            bins = pd.qcut(d[FIBER], q=n_bins, duplicates="drop")
            ci = _grouped_mean_ci(d[OUTCOME], bins)
            bx = d[FIBER].groupby(bins, observed=True, sort=True).mean().reindex(ci.index)
            yerr = np.nan_to_num(ci["half"].to_numpy(), nan=0.0)
            ax.errorbar(
                bx.to_numpy(),
                ci["mean"].to_numpy(),
                yerr=yerr,
                fmt="o",
                color="black",
                ms=5,
                capsize=3,
                lw=1.2,
                zorder=4,
                label=f"Mean ± 95% CI within {len(ci)} fiber quantile bins"
                + (f" ({data.sampled_subjects:,} sampled subjects)" if data.sampled else ""),
            )

        # Model slopes through the sample means.
        x_bar, y_bar = data.x_mean, data.y_mean
        x_line = np.array(data.x_range, dtype=float)
        styles = [("tab:blue", "-"), ("tab:orange", "--"), ("tab:green", "-."), ("tab:red", ":")]
        for i, model in enumerate(ordered_models(coefficients.keys())):
            row = coef_row(coefficients.get(model), FIBER)
            if row is None or is_missing(row.get("estimate")):
                continue
            b = float(row["estimate"])
            color, ls = styles[i % len(styles)]
            ax.plot(
                x_line,
                y_bar + b * (x_line - x_bar),
                color=color,
                ls=ls,
                lw=2.2,
                zorder=5,
                label=f"{model}: partial slope {format_number(b)} kg per g/week",
            )
        # Keep the axes on the data: a steep model line is clipped rather than squashing
        # the points into a thin band.
        y_lo, y_hi = data.y_range
        pad = 0.08 * (y_hi - y_lo) if y_hi > y_lo else 0.5
        ax.set_ylim(y_lo - pad, y_hi + pad)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    else:
        ax.text(
            0.5,
            0.5,
            "No subject-weeks with fiber and weight change",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )

    ax.set_xlabel("Fiber intake in the study week (g/week)")
    ax.set_ylabel("Weight change to the next week (kg)")
    ax.grid(True, color="0.92", lw=0.6)
    return _figure_png(fig)


MAX_TRAJECTORY_LINES = MAX_TRAJECTORY_SUBJECTS


def trajectories_png(trajectories: pd.DataFrame | TrajectorySample) -> bytes:
    """Per-subject weight change from baseline (thin grey, gaps at missed weigh-ins) and the
    cohort mean by week with its 95% t-interval band (bold).

    ``trajectories`` is the silver table or its :class:`~potato_assets.report.digest.TrajectorySample`
    (built bucket by bucket): the weekly means use every subject, the lines a fixed sample of
    at most MAX_TRAJECTORY_LINES subjects.
    """
    from matplotlib.ticker import MaxNLocator

    data = trajectories if isinstance(trajectories, TrajectorySample) else trajectory_sample([trajectories])
    fig = _new_figure(9.0, 5.2)
    ax = fig.add_axes((0.09, 0.1, 0.88, 0.86))

    if len(data.weekly) and data.weekly["count"].gt(0).any():
        t = data.lines
        wide = t.groupby([WEEK_COL, GROUP_COL])["_y"].mean().unstack(GROUP_COL)
        wide = wide.reindex(wide.index.union(data.weekly.index))
        weeks = wide.index.to_numpy(dtype=float)
        if np.all(np.mod(weeks, 1) == 0):
            full = np.arange(int(weeks.min()), int(weeks.max()) + 1, dtype=float)
            wide = wide.reindex(full)  # missing weeks become NaN -> gaps in the lines
        wx = wide.index.to_numpy(dtype=float)
        n_subj = data.subjects
        lines = ax.plot(
            wx,
            wide.to_numpy(dtype=float),
            color="0.55",
            lw=0.8,
            alpha=0.6,
            marker=".",
            ms=2.5,
            zorder=1,
        )
        label = f"Individual subjects (n = {n_subj})"
        if data.sampled_subjects < n_subj:
            label = f"Individual subjects ({data.sampled_subjects} of {n_subj} shown, a fixed sample)"
        if lines:
            lines[0].set_label(label)

        stats = data.weekly.reindex(wx)
        stats["half"] = _t_quantile_975(stats["count"].to_numpy() - 1) * stats["std"].to_numpy()
        stats["half"] = stats["half"] / np.sqrt(stats["count"].to_numpy(dtype=float))
        lo = stats["mean"] - stats["half"]
        hi = stats["mean"] + stats["half"]
        ax.fill_between(
            wx,
            lo.to_numpy(dtype=float),
            hi.to_numpy(dtype=float),
            color="tab:blue",
            alpha=0.25,
            lw=0,
            zorder=2,
            label="95% CI of the cohort mean",
        )
        ax.plot(
            wx,
            stats["mean"].to_numpy(dtype=float),
            color="tab:blue",
            lw=2.8,
            marker="o",
            ms=4,
            zorder=3,
            label="Cohort mean",
        )
        ax.axhline(0.0, color="0.3", lw=0.8, ls=":", zorder=0)
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "No weigh-ins to plot", ha="center", va="center", transform=ax.transAxes)

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Study week")
    ax.set_ylabel("Weight change from baseline (kg)")
    ax.grid(True, color="0.92", lw=0.6)
    return _figure_png(fig)


def png_markdown_embed(png: bytes, alt: str) -> str:
    """Inline Markdown image with a base64 data URI (for Dagster UI metadata)."""
    b64 = base64.b64encode(png).decode("ascii")
    return f"![{md_escape(alt, link_text=True)}](data:image/png;base64,{b64})"
