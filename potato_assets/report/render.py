"""The report rendered from templates: Markdown and a standalone HTML page from the same sections.

``templates/report.md.j2`` and ``templates/report.html.j2`` render one
:class:`~potato_assets.report.sections.Report`; ``report.css`` is the page's style sheet.
Autoescape is on for the HTML templates and off for the Markdown ones, where the ``md_*``
filters (report/markdown.py) escape text from data instead.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping
from functools import cache

import jinja2
import pandas as pd

from potato_assets.report import markdown
from potato_assets.report.digest import TableProfile
from potato_assets.report.provenance import Provenance
from potato_assets.report.sections import Figure, Report, Section, Span, build_report


def _md_inline(spans: Iterable[Span], in_table: bool = False) -> str:
    parts = []
    for span in spans:
        if span.kind == "code":
            parts.append(markdown.md_code(span.text, in_table))
        elif span.kind == "strong" and span.text:
            parts.append(f"**{markdown.md_escape(span.text)}**")
        elif span.kind == "em" and span.text:
            parts.append(f"*{markdown.md_escape(span.text)}*")
        else:
            parts.append(markdown.md_escape(span.text))
    return "".join(parts)


def _md_fence(text: str) -> str:
    """A code fence longer than any backtick run in the text (at least three)."""
    runs = [len(m) for m in re.findall(r"`+", text)]
    return "`" * max(3, max(runs, default=0) + 1)


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(".html.j2")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("potato_assets.report", "templates"),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md_inline=_md_inline,
        md_text=markdown.md_escape,
        md_link_text=lambda s: markdown.md_escape(s, link_text=True),
        md_fence=_md_fence,
        url=markdown.url,
    )
    return env


def to_markdown(report: Report) -> str:
    return environment().get_template("report.md.j2").render(report=report)


def to_html(report: Report) -> str:
    return environment().get_template("report.html.j2").render(report=report)


def embed_figures(report: Report, pngs: Mapping[str, bytes]) -> Report:
    """The report with each figure whose ``src`` is a key of ``pngs`` drawn from those bytes, as a
    ``data:image/png;base64`` URI: for the Dagster UI, whose Markdown view cannot follow the
    relative paths the report's files use."""

    def embedded(block):
        if isinstance(block, Figure) and block.src in pngs:
            data = base64.b64encode(pngs[block.src]).decode("ascii")
            return dataclasses.replace(block, src=f"data:image/png;base64,{data}")
        return block

    return dataclasses.replace(
        report,
        sections=tuple(Section(s.title, tuple(embedded(b) for b in s.blocks)) for s in report.sections),
    )


def render_report(
    *,
    coefficients: Mapping[str, pd.DataFrame],
    summary: pd.DataFrame,
    modeling: pd.DataFrame | TableProfile,
    trajectories: pd.DataFrame | TableProfile,
    figure_paths: Mapping[str, str],
    generated_at: str,
    provenance: Provenance | None = None,
) -> tuple[str, str]:
    """Build the report once and return it as ``(markdown, html)``.

    Any text that came from data (model and term names, SE types, ``generated_at``, figure
    paths) is escaped for each output format.
    """
    report = build_report(
        coefficients=coefficients,
        summary=summary,
        modeling=modeling,
        trajectories=trajectories,
        figure_paths=figure_paths,
        generated_at=generated_at,
        provenance=provenance,
    )
    return to_markdown(report), to_html(report)
