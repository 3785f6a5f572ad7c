"""Markdown escaping: text from data renders literally in CommonMark/GFM."""

from __future__ import annotations

import re
from urllib.parse import quote


def md_escape(s: str, link_text: bool = False) -> str:
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


def md_code(s: str, in_table: bool = False) -> str:
    s = str(s).replace("\r", " ").replace("\n", " ")
    if in_table:
        s = s.replace("|", "\\|")
    runs = [len(m) for m in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def url(path: str) -> str:
    """Percent-encode characters that would break a Markdown link or an HTML attribute."""
    return quote(str(path), safe="/:._-~%#?=&+,;@!$'*")
