"""The report as plain data: sections of paragraphs, tables, lists and figures.

Each builder below takes the gold tables and returns one :class:`Section`; :func:`build_report`
assembles them. Both templates (``templates/report.md.j2`` and ``templates/report.html.j2``)
render this same :class:`Report`, so the Markdown and the HTML say the same things. Text is
kept as :class:`Span` runs (plain, code, strong, emphasis) so each format escapes and marks it
up in its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pandas as pd

from potato_assets.report.digest import MAX_FIBER_SUBJECTS, MAX_TRAJECTORY_SUBJECTS, TableProfile
from potato_assets.report.formatting import (
    FIBER,
    INTERCEPT,
    coef_frame,
    coef_row,
    flag,
    format_ci,
    format_estimate_cell,
    format_number,
    format_p,
    is_missing,
    ordered_models,
    text,
    yes_no,
)
from potato_assets.report.provenance import Provenance
from potato_assets.study.models import MODELS, MODELS_BY_NAME
from potato_assets.study.schema import FORMULA, GROUP_COL, OUTCOME, PREDICTOR_UNITS, PREDICTORS

REPORT_TITLE = "Potato diet study: weekly fiber and weight change"
FIGURE_KEYS: tuple[str, ...] = ("fiber_vs_weight_change", "subject_trajectories")
# Short units for table row labels (the long form is schema.PREDICTOR_UNITS).
SHORT_UNITS: dict[str, str] = {
    "fiber_g_week": "per g/week",
    "kcal_week_thousands": "per 1000 kcal/week",
    "beans_week": "beans week vs not",
    "potato_week": "potato week vs not",
}

# --------------------------------------------------------------------------------------------
# The document model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A run of text: plain, ``code`` (names from data), ``strong`` or ``em``."""

    kind: Literal["text", "code", "strong", "em"]
    text: str


Inline = tuple[Span, ...]


def plain(s: str) -> Span:
    return Span("text", s)


def code(s: str) -> Span:
    return Span("code", s)


def strong(s: str) -> Span:
    return Span("strong", s)


def em(s: str) -> Span:
    return Span("em", s)


@dataclass(frozen=True)
class Paragraph:
    kind: ClassVar[str] = "paragraph"
    spans: Inline


@dataclass(frozen=True)
class BulletList:
    kind: ClassVar[str] = "bullets"
    items: tuple[Inline, ...]


@dataclass(frozen=True)
class CodeBlock:
    kind: ClassVar[str] = "code_block"
    text: str


@dataclass(frozen=True)
class Figure:
    kind: ClassVar[str] = "figure"
    src: str
    alt: str
    caption: Inline


@dataclass(frozen=True)
class Row:
    cells: tuple[Inline, ...]
    # A secondary row (confidence interval and p under an estimate), set smaller.
    sub: bool = False


@dataclass(frozen=True)
class Table:
    kind: ClassVar[str] = "table"
    header: tuple[Inline, ...]
    rows: tuple[Row, ...]
    # "l" or "r" per column.
    align: tuple[str, ...]


Block = Paragraph | BulletList | CodeBlock | Figure | Table


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Report:
    title: str
    byline: Inline
    # Shown before any number, so nobody reads the numbers without seeing them.
    warnings: tuple[Inline, ...]
    sections: tuple[Section, ...]


def _cell(x: str | Inline) -> Inline:
    return (plain(x),) if isinstance(x, str) else x


def _table(
    header: list[str | Inline], rows: list[list[str | Inline]], align: list[str], sub: list[bool] | None = None
) -> Table:
    subs = sub if sub is not None else [False] * len(rows)
    return Table(
        header=tuple(_cell(h) for h in header),
        rows=tuple(Row(tuple(_cell(c) for c in r), s) for r, s in zip(rows, subs, strict=True)),
        align=tuple(align),
    )


# --------------------------------------------------------------------------------------------
# Facts the sections share
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The gold tables, with the model order and the summary rows looked up once."""

    coefficients: Mapping[str, pd.DataFrame]
    summary_rows: dict[str, dict[str, Any]]
    models: list[str]
    modeling: TableProfile
    trajectories: TableProfile
    figure_paths: Mapping[str, str]
    generated_at: str
    provenance: Provenance | None = None

    def summary_value(self, model: str, key: str) -> Any:
        return self.summary_rows.get(model, {}).get(key)


def _summary_rows(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    if summary is None or len(summary) == 0 or "model" not in summary.columns:
        return {}
    return {str(r["model"]): dict(r) for _, r in summary.iterrows()}


def _profile(table: pd.DataFrame | TableProfile) -> TableProfile:
    """A silver table's counts for the report; at scale the gold assets build them bucket by bucket."""
    return table if isinstance(table, TableProfile) else TableProfile.of(table)


def _week_range(profile: TableProfile) -> str:
    if profile.week_min is None or profile.week_max is None:
        return "n/a"
    lo, hi = format_number(profile.week_min), format_number(profile.week_max)
    return lo if lo == hi else f"{lo}–{hi}"


def _plural(n: int, word: str) -> str:
    return f"{word}{'s' if n != 1 else ''}"


def _absorbs_intercept(model: str) -> bool:
    spec = MODELS_BY_NAME.get(model)
    return spec is not None and spec.absorbs_intercept


# --------------------------------------------------------------------------------------------
# Section builders
# --------------------------------------------------------------------------------------------


SYNTHETIC_SAMPLE_WARNING = "These data are the bundled synthetic sample: do not cite these results."


def warnings(ins: Inputs) -> tuple[Inline, ...]:
    warns: list[Inline] = []
    if ins.provenance is not None and ins.provenance.synthetic_sample:
        warns.append((strong(SYNTHETIC_SAMPLE_WARNING),))
    for m in ins.models:
        if flag(ins.summary_value(m, "converged")) is False:
            warns.append(
                (
                    plain("Model "),
                    code(m),
                    plain(
                        " did not converge. Its estimates and standard errors may be unreliable; "
                        "do not interpret them without checking the fit."
                    ),
                )
            )
        if flag(ins.summary_value(m, "singular")) is True:
            warns.append(
                (
                    plain("The "),
                    code(m),
                    plain(
                        " fit is singular: the between-subject variance is estimated at (or near) "
                        "zero, so the random intercept adds nothing and the model behaves like "
                        "pooled OLS. Its standard errors may be too small."
                    ),
                )
            )
    return tuple(warns)


def _headline(ins: Inputs) -> list[Span]:
    rows: list[tuple[str, dict[str, Any]]] = []
    for m in ins.models:
        r = coef_row(ins.coefficients.get(m), FIBER)
        if r is not None and not is_missing(r.get("estimate")):
            rows.append((m, r))
    if not rows:
        return []
    parts = [plain(" For fiber, the estimated association with next week's weight change is ")]
    excluding_zero = 0
    for i, (m, r) in enumerate(rows):
        ci = format_ci(r.get("conf_low"), r.get("conf_high"))
        if i == len(rows) - 1 and len(rows) > 1:
            parts.append(plain("and "))
        parts.append(
            plain(f"{format_number(r['estimate'])} kg per extra g/week" + (f" (95% CI {ci})" if ci else "") + " in ")
        )
        parts.append(code(m))
        parts.append(plain(", " if i < len(rows) - 1 else ""))
        lo, hi = r.get("conf_low"), r.get("conf_high")
        if lo is not None and hi is not None and not (is_missing(lo) or is_missing(hi)):
            excluding_zero += int(float(lo) > 0 or float(hi) < 0)
    parts.append(
        plain(f". The 95% interval excludes zero in {excluding_zero} of {len(rows)} {_plural(len(rows), 'model')}.")
    )
    return parts


def _pooling_phrase() -> str:
    """ "pooled across everyone, within each subject, or partially pooled" from the registry."""
    phrases = [spec.pooling for spec in MODELS]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + ", or " + phrases[-1]


def summary_section(ins: Inputs) -> Section:
    n_models = len(ins.models)
    n_rows = ins.modeling.rows
    nobs = sorted({int(v["nobs"]) for v in ins.summary_rows.values() if not is_missing(v.get("nobs"))})
    intro = [
        plain(
            f"We fitted {n_models} regression {_plural(n_models, 'model')} of how "
            "much a subject's weight changed from one study week to the next (kg), using "
            "that week's fiber intake, calories, and whether any beans or potatoes were "
            f"eaten. The modelling data has {n_rows} subject-weeks from {ins.modeling.subjects} subjects "
            f"(study weeks {_week_range(ins.modeling)})"
        )
    ]
    if nobs:
        each = str(nobs[0]) if len(nobs) == 1 else f"{nobs[0]}–{nobs[-1]}"
        intro.append(plain(f"; each model used {each} observations"))
    intro.append(plain(f". The models differ in how they treat differences between subjects: {_pooling_phrase()}."))
    intro += _headline(ins)
    intro.append(plain(" These are associations in observational data, not causal effects."))
    return Section("Summary", (Paragraph(tuple(intro)),))


def _unit_row(name: str, meaning: str) -> list[str | Inline]:
    return [(code(name),), meaning]


def model_section(ins: Inputs) -> Section:
    unit_rows: list[list[str | Inline]] = [
        [(code(OUTCOME),), "outcome: kg, next week's weight minus this week's weight"],
        *[_unit_row(pred, PREDICTOR_UNITS.get(pred, "")) for pred in PREDICTORS],
        [(code(GROUP_COL),), "subject (the grouping / clustering variable)"],
    ]
    return Section(
        "Model",
        (
            CodeBlock(FORMULA),
            _table(["Variable", "Meaning and unit"], unit_rows, ["l", "l"]),
            Paragraph(
                (
                    plain(
                        "Each coefficient is the expected difference in next week's weight change (kg) "
                        "for one unit more of the predictor (one gram of weekly fiber, one thousand "
                        "weekly kcal, or a week with versus without beans/potato), holding the other "
                        "predictors fixed."
                    ),
                )
            ),
        ),
    )


def _ordered_terms(coefficients: Mapping[str, pd.DataFrame]) -> list[str]:
    present: list[str] = []
    for df in coefficients.values():
        for t in coef_frame(df)["term"].astype(str):
            if t not in present:
                present.append(t)
    order = [INTERCEPT, *PREDICTORS]
    return [t for t in order if t in present] + [t for t in present if t not in order]


def coefficient_table(ins: Inputs) -> Table:
    header: list[str | Inline] = ["Term", *[(code(m),) for m in ins.models]]
    rows: list[list[str | Inline]] = []
    sub: list[bool] = []
    for term in _ordered_terms(ins.coefficients):
        unit = SHORT_UNITS.get(term)
        label: Inline = (code(term), plain(f" ({unit})")) if unit else (code(term),)
        est_cells: list[str | Inline] = [label]
        ci_cells: list[str | Inline] = [(em("95% CI; p"),)]
        for m in ins.models:
            row = coef_row(ins.coefficients.get(m), term)
            if row is None:
                absorbed = term == INTERCEPT and _absorbs_intercept(m)
                est_cells.append("— (absorbed by subject effects)" if absorbed else "—")
                ci_cells.append("")
                continue
            est_cells.append(format_estimate_cell(row.get("estimate"), row.get("std_error"), row.get("p_value")))
            ci = format_ci(row.get("conf_low"), row.get("conf_high"))
            p = format_p(row.get("p_value"))
            p_text = (f"p {p}" if p.startswith("<") else f"p = {p}") if p else ""
            ci_cells.append("; ".join(x for x in (ci, p_text) if x))
        rows += [est_cells, ci_cells]
        sub += [False, True]
    return _table(header, rows, ["l", *["r"] * len(ins.models)], sub)


def coefficients_section(ins: Inputs) -> Section:
    return Section(
        "Coefficients",
        (
            Paragraph(
                (
                    plain(
                        "Cells show estimate (standard error) with significance stars; the row below "
                        "each term gives its 95% confidence interval and p-value. Units: kg of "
                        "next-week weight change per unit of the predictor."
                    ),
                )
            ),
            coefficient_table(ins),
            Paragraph(
                (
                    em(
                        "* p < 0.05, ** p < 0.01, *** p < 0.001. Several terms are tested per model, "
                        "so treat isolated stars with caution. — : term not in that model."
                    ),
                )
            ),
        ),
    )


LOG_LIKELIHOOD_NOTE = (
    "Log-likelihoods are not comparable across models: the OLS one is of the raw data, the fixed "
    "effects one of the within-subject (demeaned) data, and the mixed model's is a REML likelihood."
)


def model_summary_section(ins: Inputs) -> Section:
    get = ins.summary_value

    def r2(m: str) -> str:
        v = format_number(get(m, "r2"))
        return f"{v} (within)" if v and _absorbs_intercept(m) else v

    spec: list[tuple[str, Any]] = [
        ("Observations (subject-weeks)", lambda m: format_number(get(m, "nobs"))),
        ("Subjects (groups)", lambda m: format_number(get(m, "n_groups"))),
        ("R² (within-subject for fixed effects)", r2),
        ("Standard errors", lambda m: text(get(m, "se_type"))),
        ("Converged", lambda m: yes_no(get(m, "converged"))),
        ("Singular fit", lambda m: yes_no(get(m, "singular"))),
        ("Between-subject variance (kg²)", lambda m: format_number(get(m, "group_var"))),
        ("Residual variance (kg²)", lambda m: format_number(get(m, "residual_var"))),
        ("Log-likelihood (not comparable across models)", lambda m: format_number(get(m, "log_likelihood"))),
    ]
    header: list[str | Inline] = ["", *[(code(m),) for m in ins.models]]
    rows: list[list[str | Inline]] = [[label, *[fn(m) for m in ins.models]] for label, fn in spec]
    return Section(
        "Model summary",
        (
            _table(header, rows, ["l", *["r"] * len(ins.models)]),
            Paragraph((em("Blank cells: not applicable to that model."),)),
            Paragraph((em(LOG_LIKELIHOOD_NOTE),)),
        ),
    )


def reading_section(ins: Inputs) -> Section:
    se_spans: list[Span] = []
    for m in ins.models:
        se = ins.summary_value(m, "se_type")
        if not is_missing(se):
            se_spans += [plain("; " if se_spans else " ("), code(m), plain(f": {se}")]
    if se_spans:
        se_spans.append(plain(")"))
    items: list[Inline] = [
        (strong(spec.label), plain(" ("), code(spec.name), plain(f") {spec.reading}")) for spec in MODELS
    ]
    items += [
        (
            strong("Standard errors"),
            plain(
                " are clustered by subject where stated, because weeks of the same subject are "
                "not independent; the small-sample correction is the one named in the SE "
                "type"
            ),
            *se_spans,
            plain("."),
        ),
        (
            strong("Associations, not causal effects."),
            plain(
                " Diet was not randomised week by week; other habits, water weight and "
                "measurement timing can drive both intake and weight change. Agreement between "
                "the three models makes an association more robust, not causal."
            ),
        ),
    ]
    return Section("How to read this", (BulletList(tuple(items)),))


FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "fiber_vs_weight_change": (
        "Weekly fiber intake vs next-week weight change",
        "Each grey point is one subject-week; black points are mean weight change within "
        "fiber quantile bins (± 95% CI; unadjusted). In a cohort of more than "
        f"{MAX_FIBER_SUBJECTS:,} subjects the points and bins are those of a fixed sample of "
        f"{MAX_FIBER_SUBJECTS:,} subjects (chosen by a hash of subject_id), the slopes' means from every "
        "subject-week. Lines are each model's fiber coefficient "
        "drawn as a slope through the sample means; it is a partial effect (calories, beans "
        "and potato weeks held fixed), not a fit to the raw points. Associations, not causal effects.",
    ),
    "subject_trajectories": (
        "Weight change from baseline by subject",
        "Thin grey lines: each subject's weight change from their first weigh-in (kg); "
        "gaps are missed weigh-ins; beyond "
        f"{MAX_TRAJECTORY_SUBJECTS} subjects, the lines of a fixed sample of {MAX_TRAJECTORY_SUBJECTS}"
        " (chosen by a hash of subject_id). Bold line and band: mean over all the subjects weighed that "
        "week, with a 95% t-interval.",
    ),
}


def figures_section(ins: Inputs) -> Section:
    blocks: list[Block] = []
    for key in FIGURE_KEYS:
        if key in ins.figure_paths:
            alt, caption = FIGURE_TEXT[key]
            blocks.append(Figure(ins.figure_paths[key], alt, (plain(caption),)))
    for key, path in ins.figure_paths.items():
        if key not in FIGURE_KEYS:
            blocks.append(Figure(path, key, (code(key),)))
    return Section("Figures", tuple(blocks))


def data_section(ins: Inputs) -> Section:
    trajectories = ins.trajectories
    missed = trajectories.missing_weight
    items: tuple[Inline, ...] = (
        (
            plain(
                f"Modelling data: {ins.modeling.rows} rows (subject-weeks), {ins.modeling.subjects} subjects, "
                f"study weeks {_week_range(ins.modeling)}."
            ),
        ),
        (
            plain(
                f"Trajectories: {trajectories.rows} subject-weeks from {trajectories.subjects} "
                f"subjects, {missed} missed weigh-ins."
            ),
        ),
        (plain(f"Generated at: {ins.generated_at}"),),
    )
    return Section("Data", (BulletList(items),))


def provenance_section(ins: Inputs) -> Section | None:
    prov = ins.provenance
    if prov is None:
        return None
    data: Inline = (
        (plain("the bundled synthetic sample: do not cite these results"),)
        if prov.synthetic_sample
        else (plain("not the bundled sample"),)
    )
    items: tuple[Inline, ...] = (
        (plain("Landing location: "), code(prov.landing_location)),
        (plain("Data: "), *data),
        (plain("Code version: "), code(prov.code_version)),
        (plain("Packages: "), *_joined([(code(f"{name} {version}"),) for name, version in prov.packages])),
        (plain("Dagster run id: "), code(prov.run_id)),
    )
    files = _table(
        ["Landing file", "sha256", "Rows read"],
        [[(code(f.file_name),), (code(f.sha256),), str(f.rows_read)] for f in prov.files],
        ["l", "l", "r"],
    )
    blocks: list[Block] = [BulletList(items), files]
    if prov.unrecorded_files:
        blocks.append(
            Paragraph(
                (
                    strong("No ingest record on this Dagster instance for "),
                    *_joined([(code(name),) for name in prov.unrecorded_files]),
                    plain(": their hashes and row counts are unknown to this report."),
                )
            )
        )
    return Section("Provenance", tuple(blocks))


def _joined(parts: list[Inline]) -> list[Span]:
    out: list[Span] = []
    for i, part in enumerate(parts):
        if i:
            out.append(plain(", "))
        out += part
    return out


def rows_section(ins: Inputs) -> Section | None:
    """Read -> quarantined -> modelled, by reason."""
    prov = ins.provenance
    if prov is None:
        return None
    blocks: list[Block] = []
    acc = prov.rows
    if acc is not None:
        blocks.append(
            Paragraph(
                (
                    plain(
                        f"{acc.subject_weeks} subject-weeks → {acc.modelled} modelled: "
                        f"{acc.no_outcome} without an outcome (no weigh-in that week or the next), "
                        f"{acc.missing_predictor} missing a predictor."
                    ),
                )
            )
        )
        if not acc.adds_up:
            blocks.append(
                Paragraph(
                    (
                        strong("These counts do not add up"),
                        plain(
                            f" ({acc.modelled} + {acc.no_outcome} + {acc.missing_predictor} ≠ {acc.subject_weeks}): "
                            "the silver table's record is from another run than the data modelled here."
                        ),
                    )
                )
            )
    blocks.append(
        _table(
            ["Landing file", "Rows read", "Quarantined", "Exact duplicates dropped", "Kept in bronze"],
            [
                [
                    (code(f.file_name),),
                    str(f.rows_read),
                    str(f.rows_quarantined),
                    str(f.exact_duplicates_dropped),
                    str(f.rows_kept),
                ]
                for f in prov.files
            ],
            ["l", "r", "r", "r", "r"],
        )
    )
    blocks.append(
        Paragraph(
            (
                plain("Quarantined rows, one record per offending cell with file, line and reason, are in "),
                code("bronze/quarantine"),
                plain("."),
            )
        )
    )
    return Section("Rows: read, quarantined, modelled", tuple(blocks))


SECTIONS = (
    provenance_section,
    rows_section,
    summary_section,
    model_section,
    coefficients_section,
    model_summary_section,
    reading_section,
    figures_section,
    data_section,
)


def build_report(
    *,
    coefficients: Mapping[str, pd.DataFrame],
    summary: pd.DataFrame,
    modeling: pd.DataFrame | TableProfile,
    trajectories: pd.DataFrame | TableProfile,
    figure_paths: Mapping[str, str],
    generated_at: str,
    provenance: Provenance | None = None,
) -> Report:
    summary_rows = _summary_rows(summary)
    ins = Inputs(
        coefficients=coefficients,
        summary_rows=summary_rows,
        models=ordered_models(coefficients.keys(), summary_rows.keys()),
        modeling=_profile(modeling),
        trajectories=_profile(trajectories),
        figure_paths=figure_paths,
        generated_at=generated_at,
        provenance=provenance,
    )
    return Report(
        title=REPORT_TITLE,
        byline=(em(f"Generated {generated_at}"),),
        warnings=warnings(ins),
        sections=tuple(section for build in SECTIONS if (section := build(ins)) is not None),
    )
