"""The JSON log sink (POTATO_LOG_FORMAT=json): one JSON line per record on stderr, with the run,
trace and span ids, beside Dagster's own console output."""

from __future__ import annotations

import logging
import sys
from typing import Any

from potato_assets.lib.observe.run_state import RunState
from potato_assets.lib.observe.sinks import Sink
from potato_assets.lib.observe.telemetry import JsonLogFormatter


class JsonLogSink(Sink):
    wants_logs = True

    def __init__(self) -> None:
        self.stream = logging.StreamHandler(sys.stderr)
        self.stream.setFormatter(JsonLogFormatter())

    def log(self, record: logging.LogRecord, fields: dict[str, Any], run: RunState | None) -> None:
        record.potato_fields = fields
        self.stream.handle(record)
