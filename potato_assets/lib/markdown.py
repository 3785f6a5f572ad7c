"""Untrusted text (landing cells, header names) shown inside Markdown metadata: escaped and cut.

Every ASCII punctuation character is backslash-escaped (CommonMark renders an escaped one as
itself, so no emphasis, link, image, code span, table cell or autolink can start), '<', '>' and
'&' become entities (no HTML), line breaks and control characters become spaces, and a cell is
cut to a fixed length before escaping.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

CELL_CHARS = 80
TABLE_ROWS = 10
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_ESCAPED = set(string.punctuation) - set(_ENTITIES)


def cell(value: Any, limit: int = CELL_CHARS) -> str:
    """One value as inert Markdown text, at most `limit` characters of it (then '…')."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(_ENTITIES.get(ch) or ("\\" + ch if ch in _ESCAPED else ch) for ch in text)


def table(frame: pd.DataFrame, max_rows: int = TABLE_ROWS, limit: int = CELL_CHARS) -> str:
    """A Markdown table of the first `max_rows` rows, every header and cell through `cell`."""
    return rows_table(list(frame.columns), frame.head(max_rows).itertuples(index=False), len(frame), max_rows, limit)


def rows_table(
    columns: Sequence[Any], rows: Any, total: int | None = None, max_rows: int = TABLE_ROWS, limit: int = CELL_CHARS
) -> str:
    lines = ["| " + " | ".join(cell(c, limit) for c in columns) + " |", "|" + "---|" * len(columns)]
    shown = 0
    for row in rows:
        if shown == max_rows:
            break
        lines.append("| " + " | ".join(cell(v, limit) for v in row) + " |")
        shown += 1
    if total is not None and total > shown:
        lines.append(f"\n({shown} of {total:,} shown)")
    return "\n".join(lines)
