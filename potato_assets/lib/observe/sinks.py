"""What a sink of the instance handler answers to; each sink is its own module beside this one
(openlineage_sink, telemetry_sink, json_log_sink)."""

from __future__ import annotations

import logging
from typing import Any

from potato_assets.lib.observe.run_state import RunState, StepState

# (message, stack) of a failed step or run; None when it succeeded.
Failure = tuple[str, str | None] | None


class Sink:
    """Called by the dispatcher (handler.py) under its lock, in event order; every method is
    optional. `wants_logs`: the dispatcher builds log fields only when some sink reads them."""

    wants_logs = False

    def run_started(self, run: RunState) -> None:
        pass

    def step_started(self, run: RunState, step: StepState) -> None:
        pass

    def step_ended(self, run: RunState, step: StepState, error: Failure) -> None:
        pass

    def run_ended(self, run: RunState, error: Failure) -> None:
        pass

    def log(self, record: logging.LogRecord, fields: dict[str, Any], run: RunState | None) -> None:
        pass
