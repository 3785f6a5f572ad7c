"""What failed, from Dagster's serialised errors: the run-failure sensor and the instance handler
both read errors through here."""

from __future__ import annotations

from typing import Any

from potato_assets.lib.redact import redact_text


def cause_chain(error: Any) -> list[Any]:
    """The error, then each cause it wraps (dg.Failure and step wrappers carry the real reason as
    the cause), outermost first."""
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)
    return chain


def root_cause(error: Any) -> str:
    """The user's own exception, not Dagster's wrapper around it."""
    return str(cause_chain(error)[-1].message).strip()


def failure_of(event: Any) -> tuple[str, str | None] | None:
    """A step or run failure event's message (every message down the cause chain) and the
    outermost stack; None when the event carries no error."""
    error = getattr(event.event_specific_data, "error", None)
    if error is None:
        return None
    outer, *causes = cause_chain(error)
    message = (getattr(outer, "message", "") or "").strip()
    stack = "".join(getattr(outer, "stack", []) or []) or None
    for cause in causes:
        message += f"\n{(cause.message or '').strip()}"
    # Error texts quote URLs and settings: they go to lineage, spans and logs without secrets.
    return redact_text(message) or "step failed", redact_text(stack) if stack else None
