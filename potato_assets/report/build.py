"""The human-readable report: two figures and a Markdown/HTML write-up of the three models.

Plain Python, no Dagster. matplotlib is imported lazily inside the functions that need it,
so importing this module stays cheap for the code location.
Figures use matplotlib's object-oriented ``Figure`` API with the Agg canvas (no pyplot, no
global backend state), which is safe to call from several threads.

The report is built once as a small list of blocks (headings, paragraphs, tables, images,
warnings) and rendered twice: to Markdown (with Markdown escaping of any text that came from
data) and directly to a standalone HTML document (with HTML escaping). The ``markdown``
package is therefore not needed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from potato_assets.lib.process import long_lived_imports
from potato_assets.study.schema import (
    FORMULA,
    GROUP_COL,
    OUTCOME,
    PREDICTOR_UNITS,
    PREDICTORS,
    WEEK_COL,
)

__all__ = [
    "MODEL_ORDER",
    "fiber_vs_weight_change_png",
    "format_ci",
    "format_estimate_cell",
    "format_number",
    "format_p",
    "png_markdown_embed",
    "render_report",
    "significance_stars",
    "trajectories_png",
]

FIBER = "fiber_g_week"
INTERCEPT = "Intercept"

# Report order of the models and a plain-language label for each.
MODEL_ORDER: tuple[str, ...] = ("ols_cluster", "fixed_effects", "mixed_effects")
MODEL_LABELS: dict[str, str] = {
    "ols_cluster": "Pooled OLS, SEs clustered by subject",
    "fixed_effects": "Subject fixed effects (within-subject)",
    "mixed_effects": "Linear mixed model, random intercept per subject",
}
# Short units for table row labels (the long form is schema.PREDICTOR_UNITS).
SHORT_UNITS: dict[str, str] = {
    "fiber_g_week": "per g/week",
    "kcal_week_thousands": "per 1000 kcal/week",
    "beans_week": "beans week vs not",
    "potato_week": "potato week vs not",
}

FIGURE_KEYS: tuple[str, ...] = ("fiber_vs_weight_change", "subject_trajectories")

# --------------------------------------------------------------------------------------------
# Number formatting
# --------------------------------------------------------------------------------------------


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def format_number(x: Any, sig: int = 4) -> str:
    """``sig`` significant digits; "" for None/NaN; no exponent for large numbers."""
    if _is_missing(x):
        return ""
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 10**sig:
        return f"{v:.0f}"
    return f"{v:.{sig}g}"


def format_p(p: Any) -> str:
    """p-values: "<0.001" below 0.001, otherwise three decimals; "" when missing."""
    if _is_missing(p):
        return ""
    v = float(p)
    if v < 0.001:
        return "<0.001"
    return f"{v:.3f}"


def significance_stars(p: Any) -> str:
    if _is_missing(p):
        return ""
    v = float(p)
    if v < 0.001:
        return "***"
    if v < 0.01:
        return "**"
    if v < 0.05:
        return "*"
    return ""


def format_estimate_cell(estimate: Any, std_error: Any, p_value: Any = None) -> str:
    """ "estimate (SE)" followed by significance stars, e.g. "-0.01234 (0.004567) **"."""
    est = format_number(estimate)
    if not est:
        return ""
    se = format_number(std_error)
    text = f"{est} ({se})" if se else est
    stars = significance_stars(p_value)
    return f"{text} {stars}" if stars else text


def format_ci(low: Any, high: Any) -> str:
    lo, hi = format_number(low), format_number(high)
    if not lo and not hi:
        return ""
    return f"[{lo}, {hi}]"


def _flag(x: Any) -> bool | None:
    """A tri-state boolean from whatever a summary cell holds (bool, numpy bool, str, NaN)."""
    if _is_missing(x):
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, str):
        s = x.strip().lower()
        if s in {"true", "yes", "1"}:
            return True
        if s in {"false", "no", "0"}:
            return False
        return None
    if isinstance(x, int | float | np.integer | np.floating):
        return bool(x)
    return None


def _text(x: Any) -> str:
    return "" if _is_missing(x) else str(x)


def _yes_no(x: Any) -> str:
    f = _flag(x)
    return "" if f is None else ("yes" if f else "no")


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


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float, dpi: int = 110) -> Any:
    with long_lived_imports():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _coef_frame(df: pd.DataFrame | None) -> pd.DataFrame:
    """A coefficient table with ``term`` as a column (accepts term as the index too)."""
    if df is None:
        return pd.DataFrame(columns=["term"])
    if "term" not in df.columns:
        df = df.reset_index().rename(columns={"index": "term"})
    return df


def _coef_row(df: pd.DataFrame | None, term: str) -> dict[str, Any] | None:
    df = _coef_frame(df)
    hit = df[df["term"].astype(str) == term]
    if hit.empty:
        return None
    return dict(hit.iloc[0])


def _ordered_models(*names: Iterable[Any]) -> list[str]:
    seen: list[str] = []
    for group in names:
        for n in group:
            s = str(n)
            if s not in seen:
                seen.append(s)
    known = [m for m in MODEL_ORDER if m in seen]
    return known + [m for m in seen if m not in MODEL_ORDER]


MAX_SCATTER_POINTS = 5000


def fiber_vs_weight_change_png(modeling: pd.DataFrame, coefficients: Mapping[str, pd.DataFrame]) -> bytes:
    """Headline figure: weekly fiber vs next-week weight change, binned means, model slopes.

    One semi-transparent point per subject-week; black points with error bars are the mean
    weight change within each decile of fiber (95% t-interval); each model's fiber
    coefficient is drawn as a line of that slope through the sample means. The coefficient
    is a *partial* effect (other predictors held fixed), so the lines show a slope, not a
    fitted curve through these marginal points.
    """
    fig = _new_figure(9.0, 6.2)
    ax = fig.add_axes((0.09, 0.2, 0.88, 0.72))

    cols = [c for c in (FIBER, OUTCOME) if c in modeling.columns]
    d = modeling[cols].apply(pd.to_numeric, errors="coerce").dropna() if len(cols) == 2 else None
    have_data = d is not None and len(d) > 0

    if have_data:
        assert d is not None
        x = d[FIBER].to_numpy(dtype=float)
        y = d[OUTCOME].to_numpy(dtype=float)
        # Past a few thousand points the cloud is solid grey and slow to draw: show an evenly
        # spaced subset; the binned means and the slopes below still use every subject-week.
        shown = np.unique(np.linspace(0, len(d) - 1, min(len(d), MAX_SCATTER_POINTS)).astype(int))
        label = f"Subject-weeks (n = {len(d)})"
        if shown.size < len(d):
            label = f"Subject-weeks ({shown.size:,} of {len(d):,} shown)"
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
                label=f"Mean ± 95% CI within {len(ci)} fiber quantile bins",
            )

        # Model slopes through the sample means.
        x_bar, y_bar = float(np.mean(x)), float(np.mean(y))
        x_line = np.array([float(np.min(x)), float(np.max(x))])
        styles = [("tab:blue", "-"), ("tab:orange", "--"), ("tab:green", "-."), ("tab:red", ":")]
        for i, model in enumerate(_ordered_models(coefficients.keys())):
            row = _coef_row(coefficients.get(model), FIBER)
            if row is None or _is_missing(row.get("estimate")):
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
        y_lo, y_hi = float(np.min(y)), float(np.max(y))
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
    ax.set_title("Weekly fiber intake vs next-week weight change")
    ax.grid(True, color="0.92", lw=0.6)
    fig.text(
        0.01,
        0.015,
        "Lines: each model's fiber coefficient (a partial effect, holding calories, beans and "
        "potato weeks fixed),\ndrawn as a slope through the sample means of x and y. "
        "Points are raw subject-weeks; binned means are unadjusted.\n"
        "Associations, not causal effects.",
        fontsize=8,
        color="0.25",
        va="bottom",
    )
    return _figure_png(fig)


def _baseline_change(trajectories: pd.DataFrame) -> pd.DataFrame:
    """subject, week and change from baseline (kg); computed from weight_kg if needed."""
    t = trajectories.copy()
    if "delta_kg_from_baseline" in t.columns:
        t["_y"] = pd.to_numeric(t["delta_kg_from_baseline"], errors="coerce")
    else:
        t["_y"] = np.nan
    if t["_y"].isna().all() and "weight_kg" in t.columns:
        t = t.sort_values([GROUP_COL, WEEK_COL])
        w = pd.to_numeric(t["weight_kg"], errors="coerce")
        first = w.groupby(t[GROUP_COL]).transform("first")  # first non-NaN weigh-in
        t["_y"] = w - first
    t[WEEK_COL] = pd.to_numeric(t[WEEK_COL], errors="coerce")
    return t[[GROUP_COL, WEEK_COL, "_y"]].dropna(subset=[WEEK_COL])


MAX_TRAJECTORY_LINES = 300


def trajectories_png(trajectories: pd.DataFrame) -> bytes:
    """Per-subject weight change from baseline (thin grey, gaps at missed weigh-ins) and the
    cohort mean by week with its 95% t-interval band (bold)."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(9.0, 5.8)
    ax = fig.add_axes((0.09, 0.15, 0.88, 0.77))
    t = _baseline_change(trajectories) if len(trajectories) else None

    if t is not None and t["_y"].notna().any():
        wide = t.groupby([WEEK_COL, GROUP_COL])["_y"].mean().unstack(GROUP_COL)
        weeks = wide.index.to_numpy(dtype=float)
        if np.all(np.mod(weeks, 1) == 0):
            full = np.arange(int(weeks.min()), int(weeks.max()) + 1, dtype=float)
            wide = wide.reindex(full)  # missing weeks become NaN -> gaps in the lines
        wx = wide.index.to_numpy(dtype=float)
        n_subj = wide.shape[1]
        # Thousands of lines are unreadable and slow to draw: show an evenly spaced subset; the
        # cohort mean and its band below still use every subject.
        shown = wide.iloc[:, np.unique(np.linspace(0, n_subj - 1, min(n_subj, MAX_TRAJECTORY_LINES)).astype(int))]
        lines = ax.plot(
            wx,
            shown.to_numpy(dtype=float),
            color="0.55",
            lw=0.8,
            alpha=0.6,
            marker=".",
            ms=2.5,
            zorder=1,
        )
        label = f"Individual subjects (n = {n_subj})"
        if shown.shape[1] < n_subj:
            label = f"Individual subjects ({shown.shape[1]} of {n_subj} shown)"
        lines[0].set_label(label)

        stats = _grouped_mean_ci(t["_y"], t[WEEK_COL]).reindex(wx)
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
    ax.set_title("Weight change from baseline, by subject")
    ax.grid(True, color="0.92", lw=0.6)
    fig.text(
        0.01,
        0.015,
        "Grey: one line per subject; gaps are missed weigh-ins. "
        "Blue: mean over subjects weighed that week, with 95% t-interval.",
        fontsize=8,
        color="0.25",
        va="bottom",
    )
    return _figure_png(fig)


def png_markdown_embed(png: bytes, alt: str) -> str:
    """Inline Markdown image with a base64 data URI (for Dagster UI metadata)."""
    b64 = base64.b64encode(png).decode("ascii")
    return f"![{_md_escape(alt, link_text=True)}](data:image/png;base64,{b64})"


# --------------------------------------------------------------------------------------------
# A tiny document model, rendered to Markdown and to HTML
# --------------------------------------------------------------------------------------------

# Inline spans: ("t", text) | ("code", text) | ("b", text) | ("i", text)
Span = tuple[str, str]
Inline = list[Span]
Block = tuple[Any, ...]


def _spans(x: str | Inline) -> Inline:
    return [("t", x)] if isinstance(x, str) else x


def _md_escape(s: str, link_text: bool = False) -> str:
    """Escape text for Markdown (CommonMark/GFM) so it renders literally.

    ``<`` and ``&`` are escaped only where they could start an HTML tag or entity, ``]`` only
    where it could close a link or reference, and ``_`` only where it could start emphasis,
    so numbers ("<0.001", "[-0.1, 0.2]") and words stay readable in the raw Markdown.
    """
    s = str(s).replace("\r", " ").replace("\n", " ")
    out = []
    for i, ch in enumerate(s):
        nxt = s[i + 1] if i + 1 < len(s) else ""
        prv = s[i - 1] if i > 0 else ""
        if (
            ch in "\\`*|"
            or (ch == "]" and (link_text or nxt in "([:"))
            or (ch == "[" and link_text)
            or (ch == "<" and (nxt.isalpha() or nxt in "/!?"))
            or (ch == "&" and (nxt.isalnum() or nxt == "#"))
            or (ch == "_" and not (prv.isalnum() and nxt.isalnum()))
        ):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _md_code(s: str, in_table: bool = False) -> str:
    s = str(s).replace("\r", " ").replace("\n", " ")
    if in_table:
        s = s.replace("|", "\\|")
    runs = [len(m) for m in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md_inline(spans: Inline, in_table: bool = False) -> str:
    parts = []
    for kind, text in spans:
        if kind == "code":
            parts.append(_md_code(text, in_table))
        elif kind == "b" and text:
            parts.append(f"**{_md_escape(text)}**")
        elif kind == "i" and text:
            parts.append(f"*{_md_escape(text)}*")
        else:
            parts.append(_md_escape(text))
    return "".join(parts)


def _html_inline(spans: Inline) -> str:
    tags = {"code": "code", "b": "strong", "i": "em"}
    parts = []
    for kind, text in spans:
        esc = html.escape(str(text), quote=True)
        tag = tags.get(kind)
        parts.append(f"<{tag}>{esc}</{tag}>" if tag else esc)
    return "".join(parts)


def _url(path: str) -> str:
    """Percent-encode characters that would break a Markdown link or an HTML attribute."""
    return quote(str(path), safe="/:._-~%#?=&+,;@!$'*")


def _to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + _md_inline(_spans(blk[2])))
        elif kind == "p":
            out.append(_md_inline(_spans(blk[1])))
        elif kind == "ul":
            out.append("\n".join("- " + _md_inline(_spans(item)) for item in blk[1]))
        elif kind == "code_block":
            text = str(blk[1])
            runs = [len(m) for m in re.findall(r"`+", text)]
            fence = "`" * max(3, max(runs, default=0) + 1)
            out.append(f"{fence}\n{text}\n{fence}")
        elif kind == "warn":
            out.append("> **⚠ Warning:** " + _md_inline(_spans(blk[1])))
        elif kind == "img":
            _, src, alt, caption = blk
            img = f"![{_md_escape(alt, link_text=True)}]({_url(src)})"
            out.append(f"{img}\n\n*{_md_inline(_spans(caption))}*")
        elif kind == "table":
            _, header, rows, align, _classes = blk
            head = "| " + " | ".join(_md_inline(_spans(h), True) for h in header) + " |"
            sep = "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"
            body = ["| " + " | ".join(_md_inline(_spans(c), True) or " " for c in r) + " |" for r in rows]
            out.append("\n".join([head, sep, *body]))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 62rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; vertical-align: top; }
th { background: #f3f3f3; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.sub td { color: #555; font-size: .85rem; border-top: none; }
pre { background: #f6f8fa; padding: .6rem .8rem; overflow-x: auto; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
.warning { background: #fff4e5; border: 2px solid #e69500; border-radius: 4px;
           padding: .6rem .9rem; margin: 1rem 0; font-weight: 500; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: .88rem; color: #555; }
""".strip()


def _to_html(blocks: Sequence[Block], title: str) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append(f"<h{blk[1]}>{_html_inline(_spans(blk[2]))}</h{blk[1]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(_spans(blk[1]))}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{_html_inline(_spans(i))}</li>" for i in blk[1])
            out.append(f"<ul>{items}</ul>")
        elif kind == "code_block":
            out.append(f"<pre><code>{html.escape(str(blk[1]))}</code></pre>")
        elif kind == "warn":
            out.append(
                f'<div class="warning" role="alert"><strong>⚠ Warning:</strong> {_html_inline(_spans(blk[1]))}</div>'
            )
        elif kind == "img":
            _, src, alt, caption = blk
            out.append(
                f'<figure><img src="{html.escape(_url(src), quote=True)}" '
                f'alt="{html.escape(str(alt), quote=True)}">'
                f"<figcaption>{_html_inline(_spans(caption))}</figcaption></figure>"
            )
        elif kind == "table":
            _, header, rows, align, classes = blk

            def cls(a: str) -> str:
                return ' class="r"' if a == "r" else ""

            head = "".join(f"<th{cls(a)}>{_html_inline(_spans(h))}</th>" for h, a in zip(header, align, strict=True))
            body = []
            for r, rc in zip(rows, classes, strict=True):
                cells = "".join(f"<td{cls(a)}>{_html_inline(_spans(c))}</td>" for c, a in zip(r, align, strict=True))
                tr = f'<tr class="{rc}">' if rc else "<tr>"
                body.append(f"{tr}{cells}</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(out)
        + "\n</body>\n</html>\n"
    )


def _table(
    header: Sequence[str | Inline],
    rows: Sequence[Sequence[str | Inline]],
    align: Sequence[str],
    classes: Sequence[str | None] | None = None,
) -> Block:
    return (
        "table",
        list(header),
        [list(r) for r in rows],
        list(align),
        list(classes) if classes is not None else [None] * len(rows),
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

REPORT_TITLE = "Potato diet study: weekly fiber and weight change"


def _summary_rows(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    if summary is None or len(summary) == 0 or "model" not in summary.columns:
        return {}
    return {str(r["model"]): dict(r) for _, r in summary.iterrows()}


def _ordered_terms(coefficients: Mapping[str, pd.DataFrame]) -> list[str]:
    present: list[str] = []
    for df in coefficients.values():
        for t in _coef_frame(df)["term"].astype(str):
            if t not in present:
                present.append(t)
    order = [INTERCEPT, *PREDICTORS]
    return [t for t in order if t in present] + [t for t in present if t not in order]


def _coefficient_table(models: list[str], coefficients: Mapping[str, pd.DataFrame]) -> Block:
    header: list[str | Inline] = ["Term", *[[("code", m)] for m in models]]
    rows: list[list[str | Inline]] = []
    classes: list[str | None] = []
    for term in _ordered_terms(coefficients):
        unit = SHORT_UNITS.get(term)
        label: Inline = [("code", term)] + ([("t", f" ({unit})")] if unit else [])
        est_cells: list[str | Inline] = [label]
        ci_cells: list[str | Inline] = [[("i", "95% CI; p")]]
        for m in models:
            row = _coef_row(coefficients.get(m), term)
            if row is None:
                absorbed = term == INTERCEPT and m == "fixed_effects"
                est_cells.append("— (absorbed by subject effects)" if absorbed else "—")
                ci_cells.append("")
                continue
            est_cells.append(format_estimate_cell(row.get("estimate"), row.get("std_error"), row.get("p_value")))
            ci = format_ci(row.get("conf_low"), row.get("conf_high"))
            p = format_p(row.get("p_value"))
            p_text = (f"p {p}" if p.startswith("<") else f"p = {p}") if p else ""
            ci_cells.append("; ".join(x for x in (ci, p_text) if x))
        rows += [est_cells, ci_cells]
        classes += [None, "sub"]
    return _table(header, rows, ["l", *["r"] * len(models)], classes)


def _summary_table(models: list[str], srows: dict[str, dict[str, Any]]) -> Block:
    def get(m: str, key: str) -> Any:
        return srows.get(m, {}).get(key)

    def r2(m: str) -> str:
        v = format_number(get(m, "r2"))
        return f"{v} (within)" if v and m == "fixed_effects" else v

    spec: list[tuple[str, Any]] = [
        ("Observations (subject-weeks)", lambda m: format_number(get(m, "nobs"))),
        ("Subjects (groups)", lambda m: format_number(get(m, "n_groups"))),
        ("R² (within-subject for fixed effects)", r2),
        ("Standard errors", lambda m: _text(get(m, "se_type"))),
        ("Converged", lambda m: _yes_no(get(m, "converged"))),
        ("Singular fit", lambda m: _yes_no(get(m, "singular"))),
        ("Between-subject variance (kg²)", lambda m: format_number(get(m, "group_var"))),
        ("Residual variance (kg²)", lambda m: format_number(get(m, "residual_var"))),
        ("Log-likelihood", lambda m: format_number(get(m, "log_likelihood"))),
    ]
    header: list[str | Inline] = ["", *[[("code", m)] for m in models]]
    rows = [[label, *[fn(m) for m in models]] for label, fn in spec]
    return _table(header, rows, ["l", *["r"] * len(models)])


def _warnings(models: list[str], srows: dict[str, dict[str, Any]]) -> list[Inline]:
    warns: list[Inline] = []
    for m in models:
        s = srows.get(m, {})
        if _flag(s.get("converged")) is False:
            warns.append(
                [
                    ("t", "Model "),
                    ("code", m),
                    (
                        "t",
                        " did not converge. Its estimates and standard errors may be unreliable; "
                        "do not interpret them without checking the fit.",
                    ),
                ]
            )
        if _flag(s.get("singular")) is True:
            warns.append(
                [
                    ("t", "The "),
                    ("code", m),
                    (
                        "t",
                        " fit is singular: the between-subject variance is estimated at (or near) "
                        "zero, so the random intercept adds nothing and the model behaves like "
                        "pooled OLS. Its standard errors may be too small.",
                    ),
                ]
            )
    return warns


def _n_subjects(df: pd.DataFrame) -> int:
    return int(df[GROUP_COL].nunique()) if GROUP_COL in df.columns else 0


def _week_range(df: pd.DataFrame) -> str:
    if WEEK_COL not in df.columns or df[WEEK_COL].dropna().empty:
        return "n/a"
    w = pd.to_numeric(df[WEEK_COL], errors="coerce").dropna()
    lo, hi = format_number(w.min()), format_number(w.max())
    return lo if lo == hi else f"{lo}–{hi}"


def _unit_row(name: str, meaning: str) -> list[str | Inline]:
    return [[("code", name)], meaning]


def _headline(models: list[str], coefficients: Mapping[str, pd.DataFrame]) -> Inline:
    parts: Inline = []
    rows: list[tuple[str, dict[str, Any]]] = []
    for m in models:
        r = _coef_row(coefficients.get(m), FIBER)
        if r is not None and not _is_missing(r.get("estimate")):
            rows.append((m, r))
    if not rows:
        return parts
    parts.append(("t", " For fiber, the estimated association with next week's weight change is "))
    excl = 0
    for i, (m, r) in enumerate(rows):
        ci = format_ci(r.get("conf_low"), r.get("conf_high"))
        sep = ", " if i < len(rows) - 1 else ""
        if i == len(rows) - 1 and len(rows) > 1:
            parts.append(("t", "and "))
        parts.append(
            (
                "t",
                f"{format_number(r['estimate'])} kg per extra g/week" + (f" (95% CI {ci})" if ci else "") + " in ",
            )
        )
        parts.append(("code", m))
        parts.append(("t", sep))
        lo, hi = r.get("conf_low"), r.get("conf_high")
        if lo is not None and hi is not None and not (_is_missing(lo) or _is_missing(hi)):
            excl += int(float(lo) > 0 or float(hi) < 0)
    parts.append(
        (
            "t",
            f". The 95% interval excludes zero in {excl} of {len(rows)} model{'s' if len(rows) != 1 else ''}.",
        )
    )
    return parts


def render_report(
    *,
    coefficients: Mapping[str, pd.DataFrame],
    summary: pd.DataFrame,
    modeling: pd.DataFrame,
    trajectories: pd.DataFrame,
    figure_paths: Mapping[str, str],
    generated_at: str,
    data_versions: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Build the report and return ``(markdown, html)``.

    Any text that came from data (model and term names, SE types, data versions,
    ``generated_at``, figure paths) is escaped for each output format.
    """
    srows = _summary_rows(summary)
    models = _ordered_models(coefficients.keys(), srows.keys())
    n_rows = len(modeling)
    n_subj = _n_subjects(modeling)
    weeks = _week_range(modeling)
    nobs = sorted({int(v["nobs"]) for v in srows.values() if not _is_missing(v.get("nobs"))})

    blocks: list[Block] = [("h", 1, REPORT_TITLE), ("p", [("i", f"Generated {generated_at}")])]

    # Warnings first, so nobody reads the numbers without seeing them.
    warns = _warnings(models, srows)
    for w in warns:
        blocks.append(("warn", w))

    # Plain-language summary.
    n_models = len(models)
    intro: Inline = [
        (
            "t",
            f"We fitted {n_models} regression model{'s' if n_models != 1 else ''} of how "
            "much a subject's weight changed from one study week to the next (kg), using "
            "that week's fiber intake, calories, and whether any beans or potatoes were "
            f"eaten. The modelling data has {n_rows} subject-weeks from {n_subj} subjects "
            f"(study weeks {weeks})",
        ),
    ]
    if nobs:
        each = str(nobs[0]) if len(nobs) == 1 else f"{nobs[0]}–{nobs[-1]}"
        intro.append(("t", f"; each model used {each} observations"))
    intro.append(
        (
            "t",
            ". The models differ in how they treat differences between subjects: "
            "pooled across everyone, within each subject, or partially pooled.",
        )
    )
    intro += _headline(models, coefficients)
    intro.append(("t", " These are associations in observational data, not causal effects."))
    blocks += [("h", 2, "Summary"), ("p", intro)]

    # Formula and units.
    unit_rows: list[list[str | Inline]] = [
        [[("code", OUTCOME)], "outcome: kg, next week's weight minus this week's weight"],
        *[_unit_row(pred, PREDICTOR_UNITS.get(pred, "")) for pred in PREDICTORS],
        [[("code", GROUP_COL)], "subject (the grouping / clustering variable)"],
    ]
    blocks += [
        ("h", 2, "Model"),
        ("code_block", FORMULA),
        _table(["Variable", "Meaning and unit"], unit_rows, ["l", "l"]),
        (
            "p",
            "Each coefficient is the expected difference in next week's weight change (kg) "
            "for one unit more of the predictor (one gram of weekly fiber, one thousand "
            "weekly kcal, or a week with versus without beans/potato), holding the other "
            "predictors fixed.",
        ),
    ]

    # Coefficients.
    blocks += [
        ("h", 2, "Coefficients"),
        (
            "p",
            "Cells show estimate (standard error) with significance stars; the row below "
            "each term gives its 95% confidence interval and p-value. Units: kg of "
            "next-week weight change per unit of the predictor.",
        ),
        _coefficient_table(models, coefficients),
        (
            "p",
            [
                (
                    "i",
                    "* p < 0.05, ** p < 0.01, *** p < 0.001. Several terms are tested per model, "
                    "so treat isolated stars with caution. — : term not in that model.",
                )
            ],
        ),
    ]

    # Model summary.
    blocks += [
        ("h", 2, "Model summary"),
        _summary_table(models, srows),
        ("p", [("i", "Blank cells: not applicable to that model.")]),
    ]

    # How to read this.
    se_spans: Inline = []
    for m in models:
        se = srows.get(m, {}).get("se_type")
        if not _is_missing(se):
            se_spans += [("t", "; " if se_spans else " ("), ("code", m), ("t", f": {se}")]
    if se_spans:
        se_spans.append(("t", ")"))
    how: list[Inline] = [
        [
            ("b", "Pooled OLS"),
            ("t", " ("),
            ("code", "ols_cluster"),
            (
                "t",
                ") treats all subject-weeks alike: its coefficients mix differences between "
                "subjects with changes within a subject.",
            ),
        ],
        [
            ("b", "Fixed effects"),
            ("t", " ("),
            ("code", "fixed_effects"),
            (
                "t",
                ") give every subject their own intercept, so the coefficients describe "
                "within-subject associations: weeks in which a subject ate more fiber than "
                "their own average, compared with their other weeks. There is no overall "
                "intercept, and R² is the within-subject R².",
            ),
        ],
        [
            ("b", "Mixed model"),
            ("t", " ("),
            ("code", "mixed_effects"),
            (
                "t",
                ") gives each subject a random intercept drawn from a common distribution "
                "(partial pooling): subjects with few weeks are shrunk towards the cohort. "
                "The between-subject and residual variances are its variance components; "
                "a singular fit means the between-subject variance is about zero.",
            ),
        ],
        [
            ("b", "Standard errors"),
            (
                "t",
                " are clustered by subject where stated, because weeks of the same subject are "
                "not independent; the small-sample correction is the one named in the SE "
                "type",
            ),
            *se_spans,
            ("t", "."),
        ],
        [
            ("b", "Associations, not causal effects."),
            (
                "t",
                " Diet was not randomised week by week; other habits, water weight and "
                "measurement timing can drive both intake and weight change. Agreement between "
                "the three models makes an association more robust, not causal.",
            ),
        ],
    ]
    blocks += [("h", 2, "How to read this"), ("ul", how)]

    # Figures.
    blocks.append(("h", 2, "Figures"))
    fig_text = {
        "fiber_vs_weight_change": (
            "Weekly fiber intake vs next-week weight change",
            "Each grey point is one subject-week; black points are mean weight change within "
            "fiber quantile bins (± 95% CI). Lines are each model's fiber coefficient drawn "
            "as a slope through the sample means; it is a partial effect (other predictors "
            "held fixed), not a fit to the raw points.",
        ),
        "subject_trajectories": (
            "Weight change from baseline by subject",
            "Thin grey lines: each subject's weight change from their first weigh-in (kg); "
            "gaps are missed weigh-ins. Bold line and band: cohort mean by week with 95% CI.",
        ),
    }
    for key in FIGURE_KEYS:
        if key in figure_paths:
            alt, caption = fig_text[key]
            blocks.append(("img", figure_paths[key], alt, caption))
    for key, path in figure_paths.items():
        if key not in FIGURE_KEYS:
            blocks.append(("img", path, key, [("code", key)]))

    # Data.
    traj_rows = len(trajectories)
    missed = (
        int(pd.to_numeric(trajectories["weight_kg"], errors="coerce").isna().sum())
        if "weight_kg" in trajectories.columns
        else 0
    )
    data_items: list[Inline] = [
        [
            (
                "t",
                f"Modelling data: {n_rows} rows (subject-weeks), {n_subj} subjects, study weeks {weeks}.",
            )
        ],
        [
            (
                "t",
                f"Trajectories: {traj_rows} subject-weeks from {_n_subjects(trajectories)} "
                f"subjects, {missed} missed weigh-ins.",
            )
        ],
        [("t", f"Generated at: {generated_at}")],
    ]
    blocks += [("h", 2, "Data"), ("ul", data_items)]
    if data_versions:
        blocks.append(
            _table(
                ["Input", "Data version"],
                [[[("code", str(k))], [("code", str(v))]] for k, v in data_versions.items()],
                ["l", "l"],
            )
        )

    return _to_markdown(blocks), _to_html(blocks, REPORT_TITLE)
