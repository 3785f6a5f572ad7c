"""Tests for potato_assets.report: figures, the Markdown/HTML report from templates, escaping, lazy imports."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from potato_assets.report import figures, formatting
from potato_assets.report.render import render_report
from potato_assets.study.schema import FORMULA, PREDICTOR_UNITS, PREDICTORS

MODELS = ("ols_cluster", "fixed_effects", "mixed_effects")
FIG_PATHS = {
    "fiber_vs_weight_change": "../figures/fiber_vs_weight_change.png",
    "subject_trajectories": "../figures/subject_trajectories.png",
}

# --------------------------------------------------------------------------------------------
# Synthetic inputs
# --------------------------------------------------------------------------------------------


def make_modeling(n_subjects: int = 12, n_weeks: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_subjects + 1):
        w = 90 + rng.normal(0, 8)
        for wk in range(1, n_weeks + 1):
            fiber = rng.uniform(80, 350)
            kcal = rng.uniform(9, 18)
            delta = -0.004 * (fiber - 200) + 0.05 * (kcal - 13) + rng.normal(0, 0.5)
            rows.append(
                {
                    "subject_id": s,
                    "week": wk,
                    "weight_kg": w,
                    "delta_kg_next": delta,
                    "fiber_g_week": fiber,
                    "kcal_week_thousands": kcal,
                    "beans_week": int(rng.random() < 0.4),
                    "potato_week": int(rng.random() < 0.8),
                }
            )
            w += delta
    return pd.DataFrame(rows)


def make_trajectories(n_subjects: int = 12, n_weeks: int = 9, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_subjects + 1):
        w = 90 + rng.normal(0, 8)
        base = w
        for wk in range(0, n_weeks):
            w += rng.normal(-0.4, 0.5) if wk else 0.0
            weight = np.nan if rng.random() < 0.15 and wk else w  # missed weigh-ins
            rows.append(
                {
                    "subject_id": s,
                    "week": wk,
                    "weight_kg": weight,
                    "delta_kg_prev": np.nan,
                    "delta_kg_from_baseline": weight - base,
                    "pct_change_from_baseline": 100 * (weight - base) / base,
                    "slope_kg_per_week": -0.4,
                }
            )
    df = pd.DataFrame(rows)
    df["delta_kg_prev"] = df.groupby("subject_id")["weight_kg"].diff()
    return df


def _coef(terms: list[str], estimates: list[float], ses: list[float]) -> pd.DataFrame:
    est, se = np.asarray(estimates, dtype=float), np.asarray(ses, dtype=float)
    z = est / se
    p = [math.erfc(abs(v) / math.sqrt(2)) for v in z]  # normal-approximation p-values
    return pd.DataFrame(
        {
            "term": terms,
            "estimate": est,
            "std_error": se,
            "statistic": z,
            "p_value": p,
            "conf_low": est - 1.96 * se,
            "conf_high": est + 1.96 * se,
        }
    )


def make_coefficients() -> dict[str, pd.DataFrame]:
    with_int = ["Intercept", *PREDICTORS]
    return {
        "ols_cluster": _coef(
            with_int,
            [0.512, -0.00412, 0.0523, -0.0813, -0.2154],
            [0.301, 0.00108, 0.0211, 0.0957, 0.1049],
        ),
        "fixed_effects": _coef(  # no Intercept
            list(PREDICTORS),
            [-0.00288, 0.0431, -0.0502, -0.1733],
            [0.00121, 0.0254, 0.1011, 0.1210],
        ),
        "mixed_effects": _coef(
            with_int,
            [0.4983, -0.00351, 0.0477, -0.0664, -0.1950],
            [0.3124, 0.00109, 0.0219, 0.0962, 0.1088],
        ),
    }


def make_summary(
    converged: tuple[bool, bool, bool] = (True, True, True), singular: bool | None = False
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": list(MODELS),
            "nobs": [96, 96, 96],
            "n_groups": [12, 12, 12],
            "r2": [0.2345, 0.1234, np.nan],
            "se_type": [
                "cluster-robust by subject (CR1, G/(G-1) small-sample correction)",
                "cluster-robust by subject (CR1)",
                "model-based (REML)",
            ],
            "converged": list(converged),
            "singular": [None, None, singular],
            "group_var": [np.nan, np.nan, 0.04321],
            "residual_var": [np.nan, np.nan, 0.2468],
            "log_likelihood": [np.nan, np.nan, -123.456],
        }
    )


def render(**overrides):
    kwargs = dict(
        coefficients=make_coefficients(),
        summary=make_summary(),
        modeling=make_modeling(),
        trajectories=make_trajectories(),
        figure_paths=FIG_PATHS,
        generated_at="2025-01-02T03:04:05+00:00",
    )
    kwargs.update(overrides)
    return render_report(**kwargs)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_good_png(png: bytes) -> None:
    import matplotlib.image as mpimg

    assert isinstance(png, bytes)
    assert png.startswith(PNG_SIGNATURE)
    img = mpimg.imread(io.BytesIO(png))
    h, w = img.shape[:2]
    assert 300 <= h <= 3000 and 400 <= w <= 4000, (h, w)
    rgb = img[..., :3].reshape(-1, 3)
    assert float(rgb.std()) > 0.02  # not a blank canvas
    assert len(np.unique(np.round(rgb[::7], 2), axis=0)) > 20  # many colours: real content


class StrictParser(HTMLParser):
    """Tracks open/close tags and fails on mismatches; records every start tag."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []
        self.doctype: str | None = None
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(doc: str) -> StrictParser:
    p = StrictParser()
    p.feed(doc)
    p.close()
    return p


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def test_fiber_figure_is_a_real_png():
    assert_good_png(figures.fiber_vs_weight_change_png(make_modeling(), make_coefficients()))


def test_trajectories_figure_is_a_real_png():
    assert_good_png(figures.trajectories_png(make_trajectories()))


def test_figures_cope_with_nan_and_missing_intercept():
    traj = make_trajectories()
    assert traj["weight_kg"].isna().any()
    # A subject with a single weigh-in and one with none at all.
    traj.loc[traj["subject_id"] == 1, ["weight_kg", "delta_kg_from_baseline"]] = np.nan
    traj.loc[(traj["subject_id"] == 2) & (traj["week"] > 0), "delta_kg_from_baseline"] = np.nan
    assert_good_png(figures.trajectories_png(traj))

    # Without the delta column, change from baseline is derived from weight_kg.
    assert_good_png(figures.trajectories_png(traj.drop(columns=["delta_kg_from_baseline"])))

    modeling = make_modeling()
    modeling.loc[::5, "delta_kg_next"] = np.nan
    modeling.loc[::7, "fiber_g_week"] = np.nan
    fe_only = {"fixed_effects": make_coefficients()["fixed_effects"]}
    assert "Intercept" not in set(fe_only["fixed_effects"]["term"])
    assert_good_png(figures.fiber_vs_weight_change_png(modeling, fe_only))
    # No models at all, or a model without a fiber term, still draws the data.
    no_fiber = {"m": _coef(["Intercept", "kcal_week_thousands"], [0.1, 0.2], [0.05, 0.1])}
    assert_good_png(figures.fiber_vs_weight_change_png(modeling, no_fiber))


def test_figures_with_empty_data_still_render():
    empty_mod = make_modeling().iloc[:0]
    empty_traj = make_trajectories().iloc[:0]
    assert figures.fiber_vs_weight_change_png(empty_mod, {}).startswith(PNG_SIGNATURE)
    assert figures.trajectories_png(empty_traj).startswith(PNG_SIGNATURE)


def test_png_markdown_embed_round_trips():
    import base64

    png = figures.trajectories_png(make_trajectories(n_subjects=3))
    md = figures.png_markdown_embed(png, "Weight [kg] trajectories")
    prefix = "![Weight \\[kg\\] trajectories](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    assert base64.b64decode(md[len(prefix) : -1]) == png


def test_figures_are_palette_pngs_small_enough_for_the_event_log():
    """Each PNG is also stored in Dagster's event log (figure and report metadata): 8-bit palette,
    under 150 kB even with the 300 trajectory lines and 5,000 points the figures draw at most."""
    from PIL import Image

    pngs = [
        figures.trajectories_png(make_trajectories(n_subjects=400, n_weeks=12)),
        figures.fiber_vs_weight_change_png(make_modeling(n_subjects=700, n_weeks=10), make_coefficients()),
    ]
    for png in pngs:
        with Image.open(io.BytesIO(png)) as image:
            assert image.mode == "P" and image.size == (990, pytest.approx(580, abs=20))
        assert len(png) < 150_000, len(png)


def test_embedded_report_carries_each_figure_and_the_files_keep_their_paths():
    import base64

    from potato_assets.report.render import embed_figures, to_html, to_markdown
    from potato_assets.report.sections import build_report

    report = build_report(
        coefficients=make_coefficients(),
        summary=make_summary(),
        modeling=make_modeling(),
        trajectories=make_trajectories(),
        figure_paths=FIG_PATHS,
        generated_at="2025-01-02T03:04:05+00:00",
    )
    pngs = {FIG_PATHS["fiber_vs_weight_change"]: b"\x89PNG fiber", FIG_PATHS["subject_trajectories"]: b"\x89PNG traj"}
    embedded = to_markdown(embed_figures(report, pngs))
    sources = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", embedded)
    assert [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources] == list(pngs.values())
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # Everything but the image sources is the same report; the files still link the PNGs.
    plain = to_markdown(report)
    assert re.sub(r"\]\([^)]*\)", "]()", embedded) == re.sub(r"\]\([^)]*\)", "]()", plain)
    assert re.findall(r"!\[[^\]]*\]\(([^)]*)\)", plain) == list(FIG_PATHS.values())
    assert "base64" not in to_html(report)
    # A figure without bytes keeps its path.
    partial = to_markdown(embed_figures(report, {FIG_PATHS["subject_trajectories"]: b"x"}))
    assert FIG_PATHS["fiber_vs_weight_change"] in partial and FIG_PATHS["subject_trajectories"] not in partial


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (-0.0123456, "-0.01235"),
        (1.0, "1"),
        (123.456, "123.5"),
        (-123456.7, "-123457"),
        (0.000012345, "1.234e-05"),
        (-0.00338, "-0.003380"),
        (0.221, "0.2210"),
        (389.0, "389"),
        (0.00001, "1.000e-05"),
        (np.nan, ""),
        (None, ""),
        (np.int64(96), "96"),
    ],
)
def test_format_number(x, expected):
    assert formatting.format_number(x) == expected


@pytest.mark.parametrize(
    ("p", "text", "stars"),
    [
        (0.0004, "<0.001", "***"),
        (0.0123, "0.012", "*"),
        (0.0049, "0.005", "**"),
        (0.5, "0.500", ""),
    ],
)
def test_format_p_and_stars(p, text, stars):
    assert formatting.format_p(p) == text
    assert formatting.significance_stars(p) == stars


def _cells(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in markdown.splitlines()]


def test_metadata_table_prints_integers_as_integers_and_floats_by_the_report_rule():
    frame = pd.DataFrame(
        {
            "model": ["ols_cluster", "mixed_effects"],
            "nobs": pd.array([389, 1000000], dtype="Int64"),
            # An integer column that gained a missing value is float64: still no decimals.
            "n_groups": [50.0, np.nan],
            "r2": [0.0340412, np.nan],
            "estimate": [-0.00338, 12345.678],
            "p_value": [0.0004, 0.20312],
            "converged": [True, False],
        }
    )
    rows = _cells(formatting.metadata_table(frame))
    assert rows[0] == ["model", "nobs", "n_groups", "r2", "estimate", "p_value", "converged"]
    assert rows[1] == ["---", "---:", "---:", "---:", "---:", "---:", "---"]
    assert rows[2] == ["ols_cluster", "389", "50", "0.03404", "-0.003380", "<0.001", "yes"]
    assert rows[3] == ["mixed_effects", "1000000", "", "", "12346", "0.203", "no"]
    assert not any(re.fullmatch(r"-?\d+\.0+", cell) for row in rows for cell in row)


def test_coefficients_metadata_table_is_narrow_and_keeps_every_term():
    coefficients = make_coefficients()["ols_cluster"]
    rows = _cells(formatting.coefficients_metadata_table(coefficients))
    assert rows[0] == ["term", "estimate", "SE", "p", "95% CI"]
    assert [r[0] for r in rows[2:]] == list(coefficients["term"])
    first = coefficients.iloc[0]
    assert rows[2][1:] == [
        formatting.format_number(first["estimate"]),
        formatting.format_number(first["std_error"]),
        formatting.format_p(first["p_value"]),
        formatting.md_escape(formatting.format_ci(first["conf_low"], first["conf_high"])),
    ]


def test_metadata_table_escapes_text_cells():
    frame = pd.DataFrame({"term": ["a|b", "*x*", "<script>"], "estimate": [1.5, 2.25, 3.0]})
    text = formatting.metadata_table(frame)
    rows = text.splitlines()
    assert len(rows) == 5 and all(r.count(" | ") == 1 for r in rows)  # no cell splits another
    assert "a\\|b" in text and "\\*x\\*" in text and "\\<script>" in text
    assert _cells(text)[2:] == [["a\\|b", "1.500"], ["\\*x\\*", "2.250"], ["\\<script>", "3"]]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def test_markdown_contains_models_terms_and_numbers():
    coefs = make_coefficients()
    md, _ = render(coefficients=coefs)
    for m in MODELS:
        assert f"`{m}`" in md
    for term in ["Intercept", *PREDICTORS]:
        assert f"`{term}`" in md
    for m, df in coefs.items():
        for _, r in df.iterrows():
            est = formatting.format_number(r["estimate"])
            se = formatting.format_number(r["std_error"])
            assert f"{est} ({se})" in md, (m, r["term"])
            assert formatting.format_ci(r["conf_low"], r["conf_high"]) in md
            pv = formatting.format_p(r["p_value"])
            assert (f"p {pv}" if pv.startswith("<") else f"p = {pv}") in md
    # Spot-check one cell fully formatted by hand: estimate, SE and stars.
    r = coefs["ols_cluster"].iloc[1]
    assert r["term"] == "fiber_g_week" and r["p_value"] < 0.001
    assert f"{r['estimate']:#.4g} ({r['std_error']:#.4g}) \\*\\*\\*" in md
    assert "-0.004120 (0.001080)" in md  # four significant digits, trailing zeros kept
    assert "p <0.001" in md
    # Fixed effects has no intercept: the cell says why.
    assert "absorbed by subject effects" in md


def test_markdown_has_formula_units_summary_and_data_section():
    md, _ = render()
    assert FORMULA in md
    for unit in PREDICTOR_UNITS.values():
        assert unit in md
    assert "0.1234 (within)" in md  # FE R² is labelled as within
    assert "0.04321" in md and "0.2468" in md and "-123.5" in md  # variance comps, loglik
    assert "96 subject-weeks from 12 subjects" in md
    assert "2025-01-02T03:04:05+00:00" in md
    assert "How to read this" in md
    assert "not causal" in md
    assert "![" in md and "(../figures/fiber_vs_weight_change.png)" in md
    assert "(../figures/subject_trajectories.png)" in md
    assert "Warning" not in md  # everything converged, nothing singular


def test_markdown_table_rows_have_consistent_columns():
    md, _ = render()
    lines = md.splitlines()
    header_idx = next(i for i, ln in enumerate(lines) if ln.startswith("| Term |"))
    block = []
    for ln in lines[header_idx:]:
        if not ln.startswith("|"):
            break
        block.append(ln)
    # Count unescaped pipes.
    counts = {ln.replace("\\|", "").count("|") for ln in block}
    assert counts == {len(MODELS) + 2}
    assert len(block) == 2 + 2 * 5  # header, separator, 2 rows per term


def test_html_is_well_formed_with_tables_and_images():
    _, doc = render()
    assert doc.lstrip().lower().startswith("<!doctype html>")
    assert '<meta charset="utf-8">' in doc
    p = parse_html(doc)
    assert p.errors == []
    assert p.stack == []
    tags = [t for t, _ in p.starts]
    assert tags.count("table") >= 3
    srcs = {a.get("src") for t, a in p.starts if t == "img"}
    assert set(FIG_PATHS.values()) <= srcs
    # No external assets besides the figures.
    assert not [t for t in tags if t in {"script", "link"}]
    assert "http://" not in doc and "https://" not in doc


@pytest.mark.parametrize(
    ("summary", "needle"),
    [
        (make_summary(converged=(True, False, True)), "did not converge"),
        (make_summary(singular=True), "fit is singular"),
    ],
)
def test_warnings_for_nonconvergence_and_singular_fit(summary, needle):
    md, doc = render(summary=summary)
    assert needle in md
    assert "Warning" in md
    assert needle in doc
    assert 'class="warning"' in doc
    # The warning comes before the coefficient table, so it is seen first.
    assert md.index(needle) < md.index("## Coefficients")


def test_text_from_data_is_escaped_in_html():
    evil = "<script>alert('x')</script>"
    coefs = make_coefficients()
    coefs[evil] = _coef(["Intercept", evil], [0.1, 0.2], [0.05, 0.1])
    summary = make_summary()
    summary.loc[0, "se_type"] = evil
    md, doc = render(
        coefficients=coefs,
        summary=summary,
        generated_at=evil,
        figure_paths={**FIG_PATHS, "extra": 'x" onerror="alert(1)'},
    )
    p = parse_html(doc)
    assert p.errors == [] and p.stack == []
    assert "script" not in {t for t, _ in p.starts}
    assert "<script" not in doc.lower()
    assert "&lt;script&gt;" in doc
    assert evil in "".join(p.text)  # shown to the reader as text
    # The attribute injection via a figure path is neutralised.
    assert all("onerror" not in a for _, a in p.starts)
    # Markdown: the data either sits in a code span or has its "<" escaped.
    assert "\\<script>" in md or f"`{evil}`" in md
    assert "\n<script" not in md and " <script" not in md


def test_import_does_not_load_matplotlib_or_markdown():
    code = (
        "import sys, potato_assets.report.figures, potato_assets.report.render; "
        "bad = [m for m in ('matplotlib', 'markdown', 'scipy') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_t_quantile_matches_tables():
    q = figures._t_quantile_975(np.array([0, 1, 4, 10, 31, 60, 1000]))
    assert np.isnan(q[0])
    np.testing.assert_allclose(q[1:], [12.706, 2.776, 2.228, 2.040, 2.000, 1.962], atol=2e-3)


def test_trajectory_figure_of_a_large_cohort_draws_a_labelled_subset():
    import io as _io

    import matplotlib.image

    n = figures.MAX_TRAJECTORY_LINES * 3
    weeks = np.tile(np.arange(1, 5), n)
    subjects = np.repeat(np.arange(n), 4)
    big = pd.DataFrame({"subject_id": subjects, "week": weeks, "weight_kg": 80.0 - 0.5 * weeks + (subjects % 7) * 0.1})
    big["delta_kg_from_baseline"] = big["weight_kg"] - big.groupby("subject_id")["weight_kg"].transform("first")
    png = figures.trajectories_png(big)
    assert matplotlib.image.imread(_io.BytesIO(png)).shape[0] > 100


def test_grouped_mean_ci_on_quantile_bins_equals_grouping_on_the_intervals():
    rng = np.random.default_rng(3)
    x = pd.Series(rng.gamma(3.0, 40.0, 5000))
    y = pd.Series(rng.normal(0.0, 1.0, 5000) - 0.002 * x)
    y[::17] = np.nan
    bins = pd.qcut(x, q=10)
    fast = figures._grouped_mean_ci(y, bins)
    plain = figures._grouped_mean_ci(y, pd.Series(np.asarray(bins, dtype=object)))
    assert len(fast) == 10
    assert [str(i) for i in fast.index] == [str(i) for i in plain.index]
    np.testing.assert_allclose(fast[["count", "mean", "std", "half"]], plain[["count", "mean", "std", "half"]])
    # The bin means reindex against the figure's own per-bin fiber means.
    bx = x.groupby(bins, observed=True, sort=True).mean().reindex(fast.index)
    assert bx.notna().all()


def test_fiber_figure_of_many_subject_weeks_renders():
    import io as _io

    import matplotlib.image

    n = figures.MAX_SCATTER_POINTS * 4
    rng = np.random.default_rng(5)
    fiber = rng.gamma(3.0, 40.0, n)
    big = pd.DataFrame({"fiber_g_week": fiber, "delta_kg_next": rng.normal(0.0, 1.0, n) - 0.003 * fiber})
    coefficients = {"ols_cluster": pd.DataFrame({"term": ["fiber_g_week"], "estimate": [-0.003]})}
    png = figures.fiber_vs_weight_change_png(big, coefficients)
    assert matplotlib.image.imread(_io.BytesIO(png)).shape[0] > 100


# --------------------------------------------------------------------------------------------
# The Markdown and the HTML say the same things
# --------------------------------------------------------------------------------------------

MD_IMAGE = re.compile(r"!\[((?:\\.|[^\]\\])*)\]\(([^)]*)\)")
MD_TABLE_RULE = re.compile(r"^\|[\s\-:|]+\|$")


def markdown_words(md: str) -> tuple[list[str], list[str]]:
    """The words a reader of the Markdown sees, in order, and the images' alt texts.

    Markup (emphasis, code fences, table pipes, heading and list marks) becomes a word break;
    a backslash escape is its literal character; a code span is its literal content.
    """
    alts = [re.sub(r"\\(.)", r"\1", m.group(1)) for m in MD_IMAGE.finditer(md)]
    lines = []
    for line in MD_IMAGE.sub(" ", md).splitlines():
        if MD_TABLE_RULE.match(line):
            continue
        lines.append(re.sub(r"^(#+ |> |- )", " ", line))
    text, out, i = "\n".join(lines), [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == "`":
            fence = re.match(r"`+", text[i:]).group(0)
            end = text.find(fence, i + len(fence))
            inner = text[i + len(fence) : end]
            if len(inner) > 2 and inner.startswith(" ") and inner.endswith(" "):
                inner = inner[1:-1]
            out += [" ", inner.replace("\\|", "|"), " "]
            i = end + len(fence)
        elif ch in "*|":
            out.append(" ")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out).split(), alts


class BodyText(HTMLParser):
    """The words of the HTML body, a break at every tag, and the images' alt texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.alts: list[str] = []
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        self.in_body = self.in_body or tag == "body"
        self.parts.append(" ")
        if tag == "img":
            self.alts.append(dict(attrs).get("alt") or "")

    def handle_endtag(self, tag):
        self.parts.append(" ")

    def handle_data(self, data):
        if self.in_body:
            self.parts.append(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"summary": make_summary(converged=(True, False, True), singular=True)},
        {"coefficients": {"fixed_effects": make_coefficients()["fixed_effects"]}, "figure_paths": {}},
    ],
    ids=["all-fine", "warnings", "one-model"],
)
def test_markdown_and_html_say_the_same_words_in_the_same_order(overrides):
    md, doc = render(**overrides)
    md_words, md_alts = markdown_words(md)
    body = BodyText()
    body.feed(doc)
    assert md_words == "".join(body.parts).split()
    assert md_alts == body.alts
    assert len(md_words) > 300 and "0.1234" in md_words  # the comparison saw the whole report


def test_markdown_and_html_agree_on_text_from_data():
    evil = "<script>alert('x')</script> *not* `code` | pipe \\ back_slash_"
    coefs = make_coefficients()
    coefs[evil] = _coef(["Intercept", evil], [0.1, 0.2], [0.05, 0.1])
    summary = make_summary()
    summary.loc[0, "se_type"] = evil
    md, doc = render(coefficients=coefs, summary=summary, generated_at=evil)
    md_words, _ = markdown_words(md)
    body = BodyText()
    body.feed(doc)
    assert md_words == "".join(body.parts).split()
    assert "<script>alert('x')</script>" in " ".join(md_words)


def test_the_word_comparison_notices_a_difference():
    md, doc = render()
    body = BodyText()
    body.feed(doc.replace("-0.00412", "-0.00413", 1))
    assert markdown_words(md)[0] != "".join(body.parts).split()


def test_templates_ship_with_the_package():
    import tomllib
    from pathlib import Path

    import potato_assets

    package = Path(potato_assets.__file__).parent
    templates = sorted(p.name for p in (package / "report" / "templates").iterdir())
    assert templates == ["blocks.html.j2", "blocks.md.j2", "report.css", "report.html.j2", "report.md.j2"]
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["setuptools"]["package-data"]["potato_assets"]
    assert "report/templates/*" in shipped


def test_html_template_autoescapes_and_markdown_does_not():
    from potato_assets.report.render import environment

    env = environment()
    assert env.autoescape("report.html.j2") is True  # type: ignore[operator]
    assert env.autoescape("report.md.j2") is False  # type: ignore[operator]
    assert "border-collapse" in render()[1]  # report.css is inlined into the page


# --------------------------------------------------------------------------------------------
# Provenance, row accounting, precision
# --------------------------------------------------------------------------------------------


def make_provenance(*, synthetic: bool = True, subject_weeks: int = 600, unrecorded: tuple[str, ...] = ()):
    from potato_assets.report.provenance import LandingFile, Provenance, RowAccounting, package_versions

    return Provenance(
        landing_location="s3://bucket/landing",
        synthetic_sample=synthetic,
        files=(
            LandingFile("Potato_tidy.csv", "ab" * 32, 600, 3, 1),
            LandingFile("Potato_fiber.csv", "cd" * 32, 4200, 0, 0),
        ),
        code_version="1",
        packages=package_versions(),
        run_id="0123abcd-run",
        rows=RowAccounting(subject_weeks=subject_weeks, no_outcome=188, missing_predictor=23, modelled=389),
        unrecorded_files=unrecorded,
    )


ACCOUNTING = re.compile(
    r"(\d+) subject-weeks → (\d+) modelled: (\d+) without an outcome \([^)]*\), (\d+) missing a predictor"
)


def test_provenance_opens_the_report_in_both_formats():
    md, doc = render(provenance=make_provenance())
    for out in (md, doc):
        assert out.index("Provenance") < out.index("Summary")
        assert "ab" * 32 in out and "cd" * 32 in out
        assert "do not cite these results" in out
        assert "0123abcd-run" in out and "s3://bucket/landing" in out
        for name in ("dagster", "pandas", "statsmodels", "linearmodels", "great_expectations"):
            assert name in out
    assert md.index("do not cite") < md.index("## Provenance")  # the warning comes before any number


def test_no_synthetic_warning_for_other_data_and_unrecorded_files_are_named():
    md, doc = render(provenance=make_provenance(synthetic=False, unrecorded=("Nutrition.csv",)))
    for out in (md, doc):
        assert "do not cite" not in out and "not the bundled sample" in out
        assert "Nutrition.csv" in out and "No ingest record" in out


def test_row_accounting_adds_up_and_says_so_when_it_does_not():
    md, _ = render(provenance=make_provenance())
    n, modelled, no_outcome, missing = map(int, ACCOUNTING.search(md).groups())
    assert (n, modelled, no_outcome, missing) == (600, 389, 188, 23)
    assert n == modelled + no_outcome + missing
    assert "do not add up" not in md
    # Per file: read = quarantined + duplicates dropped + kept.
    row = next(line for line in md.splitlines() if "Potato_tidy.csv" in line and "| 600 | 3 |" in line)
    assert row.rstrip(" |").endswith("596")
    bad, _ = render(provenance=make_provenance(subject_weeks=601))
    assert "These counts do not add up" in bad


def test_markdown_and_html_say_the_same_words_with_provenance():
    md, doc = render(provenance=make_provenance(unrecorded=("Nutrition.csv",)))
    body = BodyText()
    body.feed(doc)
    assert markdown_words(md)[0] == "".join(body.parts).split()


def test_every_number_has_exactly_four_significant_digits():
    md, _ = render(provenance=make_provenance())
    body = md.split("## Model\n")[1]
    # Decimals only (integers are counts, weeks and ids); p-values ("p = 0.012", "< 0.05") have
    # their own rule of three decimals.
    decimals = re.findall(r"(?<![\w.])(?<!p = )(?<!< )(?<!<)-?(\d+\.\d+)(?:e-?\d+)?(?![\w.])", body)
    assert len(decimals) > 20
    for d in decimals:
        assert len(d.replace(".", "").lstrip("0")) == 4, d


def test_log_likelihoods_carry_a_not_comparable_note():
    md, doc = render()
    for out in (md, doc):
        assert "Log-likelihood (not comparable across models)" in out
        assert "Log-likelihoods are not comparable across models" in out


def test_figure_pngs_carry_no_caption_of_their_own(monkeypatch):
    """The report prints each caption under the figure; the PNG must not repeat it."""
    from matplotlib.figure import Figure

    titles: list[str] = []
    texts: list[str] = []
    real_savefig = Figure.savefig

    def savefig(self, *args, **kwargs):
        titles.extend(ax.get_title() for ax in self.axes)
        texts.extend(t.get_text() for t in self.texts)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    figures.fiber_vs_weight_change_png(make_modeling(), make_coefficients())
    figures.trajectories_png(make_trajectories())
    assert titles and not any(titles) and texts == []


def _context(records: dict):
    from types import SimpleNamespace

    import dagster as dg

    def latest(key):
        meta = records.get(key.to_user_string())
        if meta is None:
            return None
        return SimpleNamespace(asset_materialization=dg.AssetMaterialization(key, metadata=meta))

    return SimpleNamespace(
        instance=SimpleNamespace(get_latest_materialization_event=latest), run=SimpleNamespace(run_id="run-1")
    )


def test_report_provenance_from_ingest_records_redacts_the_landing_location():
    from potato_assets.defs.gold import assets as gold

    secret_uri = "s3://user:hunter2secret@bucket/landing/Potato_tidy.csv?token=abcdef123"
    weight = {"source_uri": secret_uri, "source_sha256": "ef" * 32, "rows_read": 600, "rows_quarantined": 2}
    weight["exact_duplicates_dropped"] = 1
    silver = {"subject_weeks": 600, "dropped_no_outcome": 188, "dropped_missing_predictor": 23}
    prov = gold._report_provenance(_context({"bronze/weight": weight, "silver/modeling_dataset": silver}), modelled=389)
    assert "hunter2secret" not in prov.landing_location and prov.landing_location.startswith("s3://bucket/landing")
    assert not prov.synthetic_sample
    assert [(f.file_name, f.sha256, f.rows_kept) for f in prov.files] == [("Potato_tidy.csv", "ef" * 32, 597)]
    assert "Potato_tidy.csv" not in prov.unrecorded_files and len(prov.unrecorded_files) == 2
    assert prov.rows is not None and prov.rows.adds_up and prov.run_id == "run-1"


def test_report_provenance_without_ingest_records_claims_nothing():
    from potato_assets.defs.gold import assets as gold
    from potato_assets.study.schema import LANDING_FILES

    prov = gold._report_provenance(_context({}), modelled=10)
    assert prov.landing_location.startswith("unknown") and not prov.synthetic_sample
    assert prov.rows is None and prov.files == ()
    assert prov.unrecorded_files == tuple(spec.file_name for spec in LANDING_FILES)
