from pathlib import Path

import dagster as dg

from potato_assets.lib.process import built_once_per_process


@dg.definitions
@built_once_per_process  # built once per process, then kept off the GC's walks (lib/process.py)
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
