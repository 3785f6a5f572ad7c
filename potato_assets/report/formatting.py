"""Numbers and cells as the report prints them, and lookups into the tidy coefficient tables.

Shared by the figures (legend labels) and the section builders (table cells, sentences).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from potato_assets.report.markdown import md_escape
from potato_assets.study.models import MODEL_NAMES

FIBER = "fiber_g_week"
INTERCEPT = "Intercept"


def is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def format_number(x: Any, sig: int = 4) -> str:
    """The report's one rule for numbers: exactly ``sig`` significant digits (trailing zeros kept);
    whole numbers and values of ``10**sig`` or more without decimals; "" for None/NaN. p-values
    have their own rule (:func:`format_p`)."""
    if is_missing(x):
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
    if abs(v) >= 10**sig or v.is_integer():
        return f"{v:.0f}"
    # Exactly ``sig`` digits, trailing zeros kept: -0.003380 beside -0.003377, not -0.00338.
    out = f"{v:#.{sig}g}"
    return out.rstrip(".") if "e" not in out else out


def format_p(p: Any) -> str:
    """p-values: "<0.001" below 0.001, otherwise three decimals; "" when missing."""
    if is_missing(p):
        return ""
    v = float(p)
    if v < 0.001:
        return "<0.001"
    return f"{v:.3f}"


def significance_stars(p: Any) -> str:
    if is_missing(p):
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


def flag(x: Any) -> bool | None:
    """A tri-state boolean from whatever a summary cell holds (bool, numpy bool, str, NaN)."""
    if is_missing(x):
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


def text(x: Any) -> str:
    return "" if is_missing(x) else str(x)


def yes_no(x: Any) -> str:
    f = flag(x)
    return "" if f is None else ("yes" if f else "no")


def coef_frame(df: pd.DataFrame | None) -> pd.DataFrame:
    """A coefficient table with ``term`` as a column (accepts term as the index too)."""
    if df is None:
        return pd.DataFrame(columns=["term"])
    if "term" not in df.columns:
        df = df.reset_index().rename(columns={"index": "term"})
    return df


def coef_row(df: pd.DataFrame | None, term: str) -> dict[str, Any] | None:
    """The row of ``term``, or None when that model has no such term."""
    df = coef_frame(df)
    hit = df[df["term"].astype(str) == term]
    if hit.empty:
        return None
    return dict(hit.iloc[0])


def ordered_models(*names: Iterable[Any]) -> list[str]:
    """Every model named, registry order first, then any other name in order of appearance."""
    seen: list[str] = []
    for group in names:
        for n in group:
            s = str(n)
            if s not in seen:
                seen.append(s)
    known = [m for m in MODEL_NAMES if m in seen]
    return known + [m for m in seen if m not in MODEL_NAMES]


def metadata_cell(value: Any, *, p_value: bool = False) -> str:
    """One cell of a gold metadata table by the report's rules: whole numbers without decimals,
    other numbers by :func:`format_number`, p-values by :func:`format_p`, booleans yes/no, text
    escaped."""
    if is_missing(value):
        return ""
    if p_value and isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return format_p(value)
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        return format_number(value)
    return md_escape(str(value))


def metadata_table(df: pd.DataFrame, p_values: Iterable[str] = ("p_value",)) -> str:
    """``df`` as a Markdown table for the Dagster UI, numbers right-aligned and printed as the
    report prints them (the columns named in ``p_values`` as p-values), text escaped."""
    p_names = set(p_values)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    is_p = [str(c) in p_names for c in df.columns]
    lines = [
        "| " + " | ".join(md_escape(str(c)) for c in df.columns) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    for row in df.itertuples(index=False):
        cells = [metadata_cell(v, p_value=p) for v, p in zip(row, is_p, strict=True)]
        lines.append("| " + " | ".join(c or " " for c in cells) + " |")
    return "\n".join(lines)


def coefficients_metadata_table(df: pd.DataFrame) -> str:
    """A model's tidy coefficient table, narrow enough for the UI's metadata column: term,
    estimate, SE, p and the 95% interval in one cell (the full table is the asset's value)."""
    tidy = coef_frame(df)
    compact = pd.DataFrame(
        {
            "term": tidy["term"].astype(str),
            "estimate": tidy["estimate"],
            "SE": tidy["std_error"],
            "p": tidy["p_value"],
            "95% CI": [format_ci(lo, hi) for lo, hi in zip(tidy["conf_low"], tidy["conf_high"], strict=True)],
        }
    )
    return metadata_table(compact, p_values=("p",))
