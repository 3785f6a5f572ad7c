import warnings
from pathlib import Path

import dagster as dg

from potato_assets.lib.process import built_once_per_process

# Two beta warnings Dagster raises on its own calls in every CLI run, not on the project's: the
# selection `*` parses to AssetSelection.all(include_sources=...), and the instance's log handler
# (dagster.yaml python_logs, lib/observe/handler.py) is a beta feature used here on purpose.
warnings.filterwarnings("ignore", "Parameter `include_sources` of function `AssetSelection.all`", dg.BetaWarning)
warnings.filterwarnings("ignore", "Handling yaml-defined logging configuration", dg.BetaWarning)


@dg.definitions
@built_once_per_process  # built once per process, then kept off the GC's walks (lib/process.py)
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
