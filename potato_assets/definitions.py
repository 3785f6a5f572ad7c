from functools import cache
from pathlib import Path

import dagster as dg


@dg.definitions
@cache  # a run resolves the code location ~6 times; build the definitions once per process
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
