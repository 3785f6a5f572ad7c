"""Data contracts: Great Expectations (GX Core 1.x) suites kept as JSON files, run on DataFrames.

One suite per bronze and silver asset lives in ``potato_assets/contracts/<name>.json``. Every
expectation carries a ``severity`` ("critical" = hard rule, "warning" = soft rule, "info" =
reported only) and ``meta.rule`` (a short unique name) and ``meta.why`` (the reason, for review).
Suite ``meta.example_columns`` names the columns shown beside unexpected values (e.g.
``source_line`` so a reviewer can find the line in the landing CSV).

GX and pandas are imported on first use (GX takes seconds; loading the definitions only reads the
suite files), GX with its analytics and progress bars off.
One ephemeral context per process; a suite's GX objects are built once and reused.
No Dagster here: results are plain dataclasses.

A suite runs in two passes over one batch. The first asks GX only whether each rule holds
(``BOOLEAN_ONLY``: no unexpected-row lists, about 2.5x faster on 700k rows). The second asks for
details (observed values, unexpected counts, example rows) only where they say something: rules
that failed, table-level rules (row count, columns, types), and rules that allow some bad rows
(``mostly``). A row rule that passed with no allowance had, by definition, no unexpected rows:
its count is reported as 0 and its percent is not computed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potato_assets.lib.process import long_lived_imports

if TYPE_CHECKING:
    import pandas as pd

# The bundled suites; settings.contracts_dir (POTATO_CONTRACTS_DIR) may name another folder.
CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
SEVERITIES = ("critical", "warning", "info")
EXAMPLE_COUNT = 5
# Rules judged row by row: when one passes with no ``mostly`` allowance, it had no unexpected rows.
ROW_RULE_TYPES = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
    }
)


class ContractError(ValueError):
    """A suite file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, in plain JSON-able values."""

    rule: str
    expectation: str
    kwargs: dict[str, Any]
    severity: str
    success: bool
    why: str = ""
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    details: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "kwargs": self.kwargs,
            "severity": self.severity,
            "success": self.success,
            "observed_value": self.observed_value,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "unexpected_examples": self.unexpected_examples,
            "details": self.details,
            "error": self.error,
            "why": self.why,
        }


@dataclass(frozen=True)
class ContractResult:
    suite: str
    outcomes: tuple[ExpectationOutcome, ...]
    rows: int

    @property
    def hard_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def soft_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    @property
    def success(self) -> bool:
        """No hard and no soft rule broken ('info' failures are reported, never fail)."""
        return not self.hard_failures and not self.soft_failures

    def summary(self) -> str:
        """One sentence: what passed or which rules failed, with a few unexpected values."""
        failed = self.hard_failures + self.soft_failures
        if not failed:
            return f"{self.suite}: all {len(self.outcomes)} expectations passed on {self.rows} rows."
        parts = []
        for o in failed:
            if o.error:
                detail = o.error
            elif o.unexpected_count:
                detail = f"{o.unexpected_count} unexpected, e.g. {_short(o.unexpected_examples[:3])}"
            elif o.details and o.details.get("mismatched"):
                detail = "; ".join(f"{k}: {v}" for k, v in o.details["mismatched"].items())
            else:
                detail = f"observed {o.observed_value!r}"
            parts.append(f"{o.rule} [{o.severity}] ({detail})")
        return (
            f"{self.suite}: {len(failed)} of {len(self.outcomes)} expectations failed on {self.rows} rows: "
            + "; ".join(parts)
            + "."
        )


# An example value quoted in a one-line summary is cut to this many characters: a landing cell
# can be 100 kB.
EXAMPLE_CHARS = 80


def _short(examples: list[Any]) -> str:
    shown = []
    for e in examples:
        text = repr(e)
        shown.append(text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…")
    return "[" + ", ".join(shown) + "]"


# ----------------------------------------------------------------------------------------------
# Suite files
# ----------------------------------------------------------------------------------------------


def suite_path(name: str, directory: Path | None = None) -> Path:
    return (directory or CONTRACTS_DIR) / f"{name}.json"


def available_suites(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or CONTRACTS_DIR).glob("*.json"))


def load_suite(name_or_path: str | Path, directory: Path | None = None) -> dict[str, Any]:
    """Read and check a suite file (a path, or a name in ``directory``); returns its JSON."""
    path = Path(name_or_path) if str(name_or_path).endswith(".json") else suite_path(str(name_or_path), directory)
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"contract {path.name} does not exist in {path.parent}.") from None
    except json.JSONDecodeError as exc:
        raise ContractError(f"contract {path.name} is not valid JSON ({exc}).") from None
    if not isinstance(suite, dict) or suite.get("name") != path.stem:
        raise ContractError(f"contract {path.name} must be a JSON object whose name is {path.stem!r}.")
    expectations = suite.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise ContractError(f"contract {path.name} has no expectations.")
    rules: set[str] = set()
    for i, exp in enumerate(expectations, start=1):
        where = f"contract {path.name}, expectation {i}"
        if not isinstance(exp, dict) or not str(exp.get("type", "")).startswith("expect_"):
            raise ContractError(f"{where} has no expectation type.")
        if exp.get("severity", "critical") not in SEVERITIES:
            raise ContractError(f"{where} has severity {exp.get('severity')!r}; use one of {', '.join(SEVERITIES)}.")
        rule = (exp.get("meta") or {}).get("rule")
        if not rule or not isinstance(rule, str):
            raise ContractError(f"{where} ({exp['type']}) needs meta.rule, a short unique name.")
        if rule in rules:
            raise ContractError(f"{where}: meta.rule {rule!r} is used twice.")
        rules.add(rule)
    _check_null_handling(path.name, expectations)
    return suite


# GX judges these on non-null values only: a null passes them.
NULL_BLIND_TYPES = frozenset({"expect_column_values_to_be_in_set"})


def _check_null_handling(file_name: str, expectations: list[dict[str, Any]]) -> None:
    """A closed vocabulary must say what a null is: either the suite also requires the column
    non-null, or the rule states meta.nullable = true. Otherwise nulls pass it silently."""
    not_null = {
        (e.get("kwargs") or {}).get("column")
        for e in expectations
        if e.get("type") == "expect_column_values_to_not_be_null" and e.get("severity", "critical") == "critical"
    }
    for i, exp in enumerate(expectations, start=1):
        if exp.get("type") not in NULL_BLIND_TYPES:
            continue
        column = (exp.get("kwargs") or {}).get("column")
        nullable = (exp.get("meta") or {}).get("nullable")
        if nullable is not None and not isinstance(nullable, bool):
            raise ContractError(f"contract {file_name}, expectation {i}: meta.nullable must be true or false.")
        if column not in not_null and nullable is not True:
            raise ContractError(
                f"contract {file_name}, expectation {i} ({exp['type']} on {column}) lets nulls pass: add a "
                f"critical expect_column_values_to_not_be_null on {column}, or set meta.nullable to true."
            )


# ----------------------------------------------------------------------------------------------
# Running a suite with GX
# ----------------------------------------------------------------------------------------------


class _GxRunner:
    """One ephemeral GX context per process; GX objects for each suite built once."""

    def __init__(self) -> None:
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        with long_lived_imports():
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_pandas(name="contracts")
        self._spark_datasource: Any = None
        # Keyed by suite name; a Spark suite is named <suite>_spark (spark_types_suite).
        self._prepared: dict[str, tuple[Any, Any, str]] = {}
        self.lock = threading.Lock()

    def spark_datasource(self) -> Any:
        """GX's Spark datasource, made on first use. Its engine takes the process's active Spark
        session (SparkConnectSession.builder.getOrCreate() first), i.e. the caller's Connect
        session: no Spark JVM starts in this process."""
        if self._spark_datasource is None:
            self._spark_datasource = self.context.data_sources.add_spark(name="contracts_spark", persist=True)
        return self._spark_datasource

    def prepared(self, suite: dict[str, Any], datasource: Any = None) -> tuple[Any, Any]:
        """Batch definition and GX suite for a suite dict, rebuilt only if the file changed."""
        datasource = datasource or self.datasource
        name = suite["name"]
        fingerprint = json.dumps(suite, sort_keys=True)
        cached = self._prepared.get(name)
        if cached is not None and cached[2] == fingerprint:
            return cached[0], cached[1]
        if cached is None:
            asset = datasource.add_dataframe_asset(name=name)
            batch_definition = asset.add_batch_definition_whole_dataframe(f"{name}_whole")
        else:
            batch_definition = cached[0]
        gx_suite = self.gx_suite(name, suite["expectations"], suite.get("meta"))
        self._prepared[name] = (batch_definition, gx_suite, fingerprint)
        return batch_definition, gx_suite

    def release_batches(self, datasource: Any = None) -> None:
        """Drop the frames GX keeps after validating: its engine caches every batch it loaded,
        one per suite, so all bronze and silver tables stayed in memory for the whole run."""
        batches = (datasource or self.datasource).get_execution_engine().batch_manager
        batches.reset_batch_cache()
        batches.batch_data_cache.clear()

    def gx_suite(self, name: str, expectations: list[dict[str, Any]], meta: Any = None) -> Any:
        return self.gx.ExpectationSuite(
            name=name,
            expectations=[
                {k: v for k, v in exp.items() if k in ("type", "kwargs", "meta", "severity")} for exp in expectations
            ],
            meta=meta,
        )


_RUNNER: _GxRunner | None = None
_RUNNER_LOCK = threading.Lock()


def _runner() -> _GxRunner:
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = _GxRunner()
        return _RUNNER


def run_contract(suite: str | dict[str, Any], df: pd.DataFrame) -> ContractResult:
    """Validate ``df`` against a suite (its name, or a suite dict as returned by load_suite)."""
    if isinstance(suite, str):
        suite = load_suite(suite)
    example_columns = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in df.columns]
    runner = _runner()
    with runner.lock:
        batch_definition, gx_suite = runner.prepared(suite)
        # GX's pandas engine handles a plain RangeIndex best (examples carry index positions).
        batch = batch_definition.get_batch(batch_parameters={"dataframe": _gx_frame(df, suite)})
        try:
            held, by_rule = _two_passes(runner, suite, gx_suite, batch, example_columns)
        finally:
            runner.release_batches()
    return ContractResult(
        suite=suite["name"],
        outcomes=_outcomes(suite, held, by_rule, example_columns, set(df.columns)),
        rows=len(df),
    )


def run_contract_spark(suite: str | dict[str, Any], df: Any) -> ContractResult:
    """Validate a Spark DataFrame (classic or Spark Connect) against a suite with GX's Spark
    execution engine: every metric is a Spark job on the DataFrame's cluster, nothing is
    collected here but the metrics and the few unexpected examples.

    The same rules and the same ContractResult as run_contract: type rules name pandas dtypes
    (``int64``, ``Int64Dtype``, ``datetime64[ns]``, ...); they are checked against the Spark
    types those dtypes become (SPARK_TYPES), and outcomes report the rule as the suite wrote it.
    """
    if isinstance(suite, str):
        suite = load_suite(suite)
    spark_suite = spark_types_suite(suite)
    example_columns = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in df.columns]
    runner = _runner()
    with runner.lock:
        datasource = runner.spark_datasource()
        batch_definition, gx_suite = runner.prepared(spark_suite, datasource)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
        try:
            held, by_rule = _two_passes(runner, spark_suite, gx_suite, batch, example_columns)
            rows = df.count()
        finally:
            runner.release_batches(datasource)
            # GX persisted the frame on the cluster for its metrics; give the memory back.
            with contextlib.suppress(Exception):
                df.unpersist()
    return ContractResult(
        suite=suite["name"],
        outcomes=_outcomes(suite, held, by_rule, example_columns, set(df.columns)),
        rows=int(rows),
    )


# The Spark type (pyspark.sql.types class name) each pandas dtype name of the suites becomes
# when the table is read by Spark (parquet written by pandas/pyarrow, or createDataFrame).
# Naive timestamps arrive as TIMESTAMP_NTZ from parquet and as TIMESTAMP (session time zone)
# from createDataFrame; both are the pandas column's values.
SPARK_TYPES: dict[str, tuple[str, ...]] = {
    "int64": ("LongType",),
    "Int64Dtype": ("LongType",),
    "int32": ("IntegerType",),
    "Int32Dtype": ("IntegerType",),
    "float64": ("DoubleType",),
    "Float64Dtype": ("DoubleType",),
    "float32": ("FloatType",),
    "bool": ("BooleanType",),
    "BooleanDtype": ("BooleanType",),
    "object": ("StringType",),
    "string": ("StringType",),
    "StringDtype": ("StringType",),
    "datetime64[ns]": ("TimestampNTZType", "TimestampType"),
    "datetime64[us]": ("TimestampNTZType", "TimestampType"),
    "datetime64[ns, UTC]": ("TimestampType",),
    "datetime64[us, UTC]": ("TimestampType",),
}


def spark_types_suite(suite: dict[str, Any]) -> dict[str, Any]:
    """The suite with every type list in Spark's type names (SPARK_TYPES); a dtype name with
    no Spark equivalent is a ContractError naming the suite and the rule."""
    expectations = []
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_be_in_type_list":
            names = (exp.get("kwargs") or {}).get("type_list") or []
            unknown = [n for n in names if n not in SPARK_TYPES]
            if unknown:
                raise ContractError(
                    f"contract {suite['name']}.json, rule {exp['meta']['rule']}: type {unknown[0]!r} has no "
                    f"Spark equivalent; use one of {', '.join(SPARK_TYPES)}."
                )
            spark_names = list(dict.fromkeys(t for n in names for t in SPARK_TYPES[n]))
            exp = {**exp, "kwargs": {**exp["kwargs"], "type_list": spark_names}}
        expectations.append(exp)
    return {**suite, "name": f"{suite['name']}_spark", "expectations": expectations}


def _two_passes(
    runner: _GxRunner, suite: dict[str, Any], gx_suite: Any, batch: Any, example_columns: list[str]
) -> tuple[dict[str, bool], dict[str, Any]]:
    """Whether each rule held (BOOLEAN_ONLY), then details where they say something."""
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": EXAMPLE_COUNT,
    }
    if example_columns:
        result_format["unexpected_index_column_names"] = example_columns
    first = batch.validate(gx_suite, result_format={"result_format": "BOOLEAN_ONLY"})
    held = {r.expectation_config.meta.get("rule"): bool(r.success) for r in first.results}
    detailed = [exp for exp in suite["expectations"] if _needs_details(exp, held.get(exp["meta"]["rule"]))]
    by_rule: dict[str, Any] = {}
    if detailed:
        details_suite = runner.gx_suite(f"{suite['name']}_details", detailed, suite.get("meta"))
        second = batch.validate(details_suite, result_format=result_format)
        by_rule = {r.expectation_config.meta.get("rule"): r for r in second.results}
    return held, by_rule


def _outcomes(
    suite: dict[str, Any],
    held: dict[str, bool],
    by_rule: dict[str, Any],
    example_columns: list[str],
    columns: set[str],
) -> tuple[ExpectationOutcome, ...]:
    outcomes = []
    for exp in suite["expectations"]:
        rule = exp["meta"]["rule"]
        r = by_rule.get(rule)
        if r is None and held.get(rule) and not _needs_details(exp, True):
            outcomes.append(_clean_row_rule(exp))
            continue
        if r is None:
            outcomes.append(
                ExpectationOutcome(
                    rule,
                    exp["type"],
                    exp.get("kwargs", {}),
                    exp.get("severity", "critical"),
                    False,
                    why=exp["meta"].get("why", ""),
                    error="GX returned no result for this expectation",
                )
            )
            continue
        outcomes.append(_outcome(exp, r, example_columns, columns))
    return tuple(outcomes)


def _needs_details(exp: dict[str, Any], held: bool | None) -> bool:
    """Whether the second pass must compute this rule's details (see the module docstring)."""
    allows_some = (exp.get("kwargs") or {}).get("mostly") not in (None, 1, 1.0)
    return not held or exp["type"] not in ROW_RULE_TYPES or allows_some


def _clean_row_rule(exp: dict[str, Any]) -> ExpectationOutcome:
    """A row rule that held with no allowance: no unexpected rows, nothing else to report."""
    return ExpectationOutcome(
        rule=exp["meta"]["rule"],
        expectation=exp["type"],
        kwargs=_plain(exp.get("kwargs", {})),
        severity=exp.get("severity", "critical"),
        success=True,
        why=exp["meta"].get("why", ""),
        unexpected_count=0,
    )


def _gx_frame(df: pd.DataFrame, suite: dict[str, Any]) -> pd.DataFrame:
    """The frame as GX should see it: a plain RangeIndex (examples carry index positions), and
    nullable Int64 columns without missing values as int64 (same values). GX checks ranges of
    numpy ints vectorised but of pandas' nullable ints one Python call per row (~1 s per
    column of 700k rows). A column whose type rule does not allow int64 is left as it is."""
    import pandas as pd

    allowed: dict[str, set[str]] = {}
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_be_in_type_list":
            column = exp.get("kwargs", {}).get("column")
            allowed.setdefault(column, set(exp["kwargs"].get("type_list") or [])).intersection_update(
                exp["kwargs"].get("type_list") or []
            )
    frame = df.reset_index(drop=True)
    converted = {
        str(column): frame[column].to_numpy(dtype="int64")
        for column, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.Int64Dtype)
        and "int64" in allowed.get(str(column), {"int64"})
        and not frame[column].isna().any()
    }
    return frame.assign(**converted) if converted else frame


def _outcome(exp: dict[str, Any], r: Any, example_columns: list[str], columns: set[str]) -> ExpectationOutcome:
    res = r.result or {}
    column = exp.get("kwargs", {}).get("column")
    # GX's own message for an absent column varies by expectation (even "list index out of range").
    error = f"column {column!r} does not exist" if column is not None and column not in columns else None
    examples: list[Any] = []
    if res.get("partial_unexpected_index_list") and example_columns:
        examples = [_plain(e) for e in res["partial_unexpected_index_list"][:EXAMPLE_COUNT]]
    elif res.get("partial_unexpected_list"):
        examples = [_plain(e) for e in res["partial_unexpected_list"][:EXAMPLE_COUNT]]
    return ExpectationOutcome(
        rule=exp["meta"]["rule"],
        expectation=exp["type"],
        kwargs=_plain(exp.get("kwargs", {})),
        severity=exp.get("severity", "critical"),
        success=bool(r.success),
        why=exp["meta"].get("why", ""),
        observed_value=_plain(res.get("observed_value")),
        unexpected_count=None if res.get("unexpected_count") is None else int(res["unexpected_count"]),
        unexpected_percent=None
        if res.get("unexpected_percent") is None
        else round(float(res["unexpected_percent"]), 4),
        unexpected_examples=examples,
        details=_plain(res["details"]) if isinstance(res.get("details"), dict) else None,
        error=error or _error(r.exception_info),
    )


def _error(info: Any) -> str | None:
    """GX reports exceptions either flat or keyed by metric; return one message or None."""
    if not info:
        return None
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in infos:
        if item.get("raised_exception"):
            message = str(item.get("exception_message") or "the expectation raised an error")
            return message.replace("Error: ", "").replace(" in BatchData", "").strip()
    return None


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, timestamps to ISO text, NA/NaN/inf to None."""
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (pd.Timestamp,)):
        return None if pd.isna(value) else value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
