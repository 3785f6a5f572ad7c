import warnings
from functools import cache
from pathlib import Path

import dagster as dg

from potato_assets.lib.process import settle_process

# Two beta warnings Dagster raises on its own calls in every CLI run, not on the project's: the
# selection `*` parses to AssetSelection.all(include_sources=...), and the instance's log handler
# (dagster.yaml python_logs, lib/observe/handler.py) is a beta feature used here on purpose.
warnings.filterwarnings("ignore", "Parameter `include_sources` of function `AssetSelection.all`", dg.BetaWarning)
warnings.filterwarnings("ignore", "Handling yaml-defined logging configuration", dg.BetaWarning)


@dg.definitions
@cache  # a run resolves the code location ~6 times; build the definitions once per process
def defs() -> dg.Definitions:
    definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    settle_process()  # what is loaded now lives as long as the process: keep the GC off it
    return definitions
