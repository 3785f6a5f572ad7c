"""What a report ran on: landing files and their hashes, code and package versions, the run, and
where the rows went (read -> quarantined -> modelled). Plain data; the gold report asset fills it
from the instance's records of the bronze and silver materialisations.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

# The packages whose versions decide the numbers (fits, parsing, contracts, orchestration).
KEY_PACKAGES: tuple[str, ...] = ("dagster", "pandas", "statsmodels", "linearmodels", "great_expectations")


@dataclass(frozen=True)
class LandingFile:
    file_name: str
    sha256: str
    rows_read: int
    rows_quarantined: int
    exact_duplicates_dropped: int

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_quarantined - self.exact_duplicates_dropped


@dataclass(frozen=True)
class RowAccounting:
    """The study's subject-weeks and why some were not modelled (silver/modeling_dataset)."""

    subject_weeks: int
    no_outcome: int
    missing_predictor: int
    modelled: int

    @property
    def adds_up(self) -> bool:
        return self.subject_weeks == self.modelled + self.no_outcome + self.missing_predictor


@dataclass(frozen=True)
class Provenance:
    # Redacted for display (lib.redact.redact_uri); never carries credentials.
    landing_location: str
    synthetic_sample: bool
    files: tuple[LandingFile, ...]
    code_version: str
    packages: tuple[tuple[str, str], ...]
    run_id: str
    rows: RowAccounting | None = None
    # Landing files this instance holds no ingest record of (the report then cannot vouch for them).
    unrecorded_files: tuple[str, ...] = ()


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> tuple[tuple[str, str], ...]:
    out = []
    for name in names:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)
