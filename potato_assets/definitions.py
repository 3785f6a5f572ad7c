from functools import cache
from pathlib import Path

import dagster as dg

from potato_assets.lib.process import settle_process


@dg.definitions
@cache  # a run resolves the code location ~6 times; build the definitions once per process
def defs() -> dg.Definitions:
    definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    settle_process()  # what is loaded now lives as long as the process: keep the GC off it
    return definitions
