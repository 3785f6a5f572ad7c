"""Content versions of tables: the same rows, columns and types give the same version.

Silver assets report this as their Dagster data version, so a table recomputed from inputs that
changed elsewhere (e.g. a new food entry does not move any weigh-in) keeps its version and
nothing downstream of it reruns.
"""

import hashlib

import pandas as pd

# As many hex digits as the landing files' and bronze tables' versions (sha256[:16]).
VERSION_LENGTH = 16


def table_version(frame: pd.DataFrame) -> str:
    """sha256 over column names, dtypes and every row (values and index), in order.

    `pd.util.hash_pandas_object` hashes each row to 64 bits (vectorised); the column list and
    dtypes are added because the row hashes alone do not see a renamed column or an int column
    that became float with the same values.
    """
    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name!s}\x1f{dtype!s}\x1e".encode())
    digest.update(f"rows={len(frame)}\x1e".encode())
    rows = pd.util.hash_pandas_object(frame, index=True, categorize=True)
    digest.update(rows.to_numpy(dtype="uint64").tobytes())
    return digest.hexdigest()[:VERSION_LENGTH]
