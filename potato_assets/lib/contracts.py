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

A table too large for memory is validated in batches (``run_contract_batches``): GX judges each
batch, and the results merge into the one a single run over all rows would give (see
``run_contract_batches``). A large dataset's rules can be shared out among processes, each
judging its own over the same batches (``run_contract_dataset``'s ``processes``; the workers are
in lib/contract_workers.py), with the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potato_assets.lib.process import long_lived_imports

if TYPE_CHECKING:
    import pandas as pd

    from potato_assets.lib.lake.datasets import DatasetRef

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
    # How many GX validations judged the table (1: one frame); not part of the result itself.
    batches: int = field(default=1, compare=False)

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


# GX suites of expectation subsets kept per process (batches reuse a handful per suite).
SUBSET_CACHE = 256


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
        self._subsets: dict[tuple[str, str, str, tuple[str, ...]], Any] = {}
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

    def subset_suite(self, suite: dict[str, Any], expectations: list[dict[str, Any]], purpose: str) -> Any:
        """A GX suite of some of a suite's expectations, built once per suite version and subset."""
        rules = tuple(e["meta"]["rule"] for e in expectations)
        key = (suite["name"], json.dumps(suite, sort_keys=True), purpose, rules)
        cached = self._subsets.get(key)
        if cached is None:
            if len(self._subsets) > SUBSET_CACHE:
                self._subsets.clear()
            cached = self._subsets[key] = self.gx_suite(f"{suite['name']}_{purpose}", expectations, suite.get("meta"))
        return cached

    def release_batches(self, datasource: Any = None) -> None:
        """Drop the frames GX keeps after validating: its engine caches every batch it loaded,
        one per suite, so all bronze and silver tables stayed in memory for the whole run; and its
        metric cache, which holds every batch's column series it resolved (a table's batches piled
        up there, so a contract's memory grew with the table)."""
        engine = (datasource or self.datasource).get_execution_engine()
        engine.batch_manager.reset_batch_cache()
        engine.batch_manager.batch_data_cache.clear()
        metric_cache = getattr(engine, "_metric_cache", None)
        if isinstance(metric_cache, dict):
            metric_cache.clear()

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


def warm_up() -> None:
    """Import GX and make this process's context now (a contract worker, before its first task)."""
    _runner()


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


def run_contract_spark(
    suite: str | dict[str, Any],
    df: Any,
    *,
    columns: Sequence[str] | None = None,
    order_examples_by: Sequence[str] | None = None,
) -> ContractResult:
    """Validate a Spark DataFrame (classic or Spark Connect) against a suite with GX's Spark
    execution engine: every metric is a Spark job on the DataFrame's cluster, nothing is
    collected here but the metrics and the few unexpected examples.

    The same rules and the same ContractResult as run_contract: type rules name pandas dtypes
    (``int64``, ``Int64Dtype``, ``datetime64[ns]``, ...); they are checked against the Spark
    types those dtypes become (SPARK_TYPES), and outcomes report the rule as the suite wrote it
    (their observed value is the Spark type).

    ``columns``: the table's full column list when ``df`` holds only the columns the suite reads
    (as run_contract_batches): the columns-set rules are judged on these names. ``order_examples_by``:
    examples are the unexpected rows smallest by these columns, as run_contract_dataset's are
    (_smallest_examples).
    """
    if isinstance(suite, str):
        suite = load_suite(suite)
    spark_suite = spark_types_suite(suite)
    example_columns = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in df.columns]
    table_columns = set(df.columns if columns is None else columns)
    named: dict[str, Any] = {}
    if columns is not None:
        import pandas as pd

        # The columns-set rules on the table's names (an empty frame of them), as
        # run_contract_batches judges them; GX on Spark judges the rest.
        by_names = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
        if by_names:
            _, named = _validate(suite, pd.DataFrame(columns=list(columns)), by_names, [], "schema")
        kept = [e for e in spark_suite["expectations"] if e["type"] != "expect_table_columns_to_match_set"]
        spark_suite = {**spark_suite, "expectations": kept}
    order = [c for c in order_examples_by or () if c in df.columns]
    runner = _runner()
    with runner.lock:
        datasource = runner.spark_datasource()
        batch_definition, gx_suite = runner.prepared(spark_suite, datasource)
        # GX persists the frame on the cluster (its datasource's persist=True): the suite's
        # metric jobs read the files once.
        batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
        try:
            held, by_rule = _two_passes(runner, spark_suite, gx_suite, batch, example_columns)
            rows = int(df.count())
            outcomes = _outcomes(suite, held, {**by_rule, **named}, example_columns, table_columns)
            if order:
                outcomes = tuple(_smallest_examples(df, suite, o, order, example_columns) for o in outcomes)
        finally:
            runner.release_batches(datasource)
            # Give the cluster's memory back.
            with contextlib.suppress(Exception):
                df.unpersist()
    return ContractResult(suite=suite["name"], outcomes=outcomes, rows=rows)


def _smallest_examples(
    df: Any, suite: dict[str, Any], outcome: ExpectationOutcome, order: list[str], example_columns: list[str]
) -> ExpectationOutcome:
    """A row rule's examples, the smallest unexpected rows by ``order`` (as run_contract_dataset
    shows them). GX's Spark engine returns the first few it meets, and which those are depends on
    task timing (Connect collects a limit through a shuffle): with no more unexpected rows than
    examples they are all of them, sorted here; with more, the smallest are looked up on the
    cluster with the rule's own condition (GX's, for these five types)."""
    if outcome.expectation not in ROW_RULE_TYPES or not outcome.unexpected_examples:
        return outcome
    exp = next(e for e in suite["expectations"] if e["meta"]["rule"] == outcome.rule)
    # Keys in GX-on-pandas' order (the rule's first column, the example columns, its other
    # columns): a one-line summary quotes the dicts as they are.
    columns = _rule_columns(exp)
    keys = list(dict.fromkeys([*columns[:1], *example_columns, *columns[1:]]))
    examples = outcome.unexpected_examples
    if (outcome.unexpected_count or 0) > EXAMPLE_COUNT:
        from pyspark.sql import functions as F

        rows = (
            _unexpected_rows(df, exp)
            .orderBy(*[F.col(c).asc_nulls_last() for c in order])
            .select(*keys)
            .limit(EXAMPLE_COUNT)
            .collect()
        )
        examples = [_plain(row.asDict()) for row in rows]
    ordered = sorted(examples, key=lambda e: _example_key(e, order))
    return dataclasses.replace(
        outcome,
        unexpected_examples=[{k: e[k] for k in keys if k in e} if isinstance(e, dict) else e for e in ordered],
    )


def _unexpected_rows(df: Any, exp: dict[str, Any]) -> Any:
    """The rows a row rule finds unexpected, by GX's Spark conditions: column rules judge non-null
    values only (not-null excepted), compound unique rules skip rows by ``ignore_row_if``."""
    from functools import reduce

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    kind, kwargs = exp["type"], exp.get("kwargs") or {}
    keys = _rule_columns(exp)
    if kind == "expect_column_values_to_not_be_null":
        return df.filter(F.col(keys[0]).isNull())
    present = [F.col(c).isNotNull() for c in keys]
    ignore = kwargs.get("ignore_row_if", "all_values_are_missing")
    if kind != "expect_compound_columns_to_be_unique" or ignore == "any_value_is_missing":
        judged = df.filter(reduce(lambda a, b: a & b, present))
    elif ignore == "never":
        judged = df
    else:
        judged = df.filter(reduce(lambda a, b: a | b, present))
    column = F.col(keys[0])
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        fine = F.lit(True)
        if low is not None:
            fine = fine & (column > low if kwargs.get("strict_min") else column >= low)
        if high is not None:
            fine = fine & (column < high if kwargs.get("strict_max") else column <= high)
        return judged.filter(~fine)
    if kind == "expect_column_values_to_be_in_set":
        return judged.filter(~column.isin(list(kwargs.get("value_set") or [])))
    # Unique rules: every row of a value that occurs more than once.
    copies = F.count(F.lit(1)).over(Window.partitionBy(*keys))
    return judged.withColumn("__copies", copies).filter(F.col("__copies") > 1).drop("__copies")


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
            outcomes.append(_no_result(exp))
            continue
        outcomes.append(_outcome(exp, r, example_columns, columns))
    return tuple(outcomes)


# ----------------------------------------------------------------------------------------------
# Running a suite over batches
# ----------------------------------------------------------------------------------------------

# What run_contract_batches can merge exactly; a suite with any other type is refused.
UNIQUE_RULE_TYPES = frozenset({"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"})
COUNTED_TABLE_TYPES = frozenset(
    {"expect_table_row_count_to_be_between", "expect_column_unique_value_count_to_be_between"}
)
SAME_IN_EVERY_BATCH_TYPES = frozenset({"expect_table_columns_to_match_set", "expect_column_values_to_be_in_type_list"})
BATCHABLE_TYPES = ROW_RULE_TYPES | COUNTED_TABLE_TYPES | SAME_IN_EVERY_BATCH_TYPES
# Batches must not share a value of this column when a suite has unique rules (buckets are
# disjoint by subject), so a duplicate always lies within one batch.
PARTITION_COLUMN = "subject_id"


def check_batchable(suite: dict[str, Any]) -> None:
    """Refuse, with one plain sentence, a suite whose result batches could not reproduce: an
    expectation type not merged here, or a unique rule whose columns do not include subject_id
    (its duplicates could lie in two batches)."""
    for i, exp in enumerate(suite["expectations"], start=1):
        where = f"contract {suite['name']}.json, expectation {i} ({exp['meta']['rule']})"
        if exp["type"] not in BATCHABLE_TYPES:
            raise ContractError(
                f"{where}: {exp['type']} cannot be judged batch by batch; "
                f"types that can: {', '.join(sorted(BATCHABLE_TYPES))}."
            )
        if exp["type"] in UNIQUE_RULE_TYPES and PARTITION_COLUMN not in _rule_columns(exp):
            raise ContractError(
                f"{where}: a unique rule on {', '.join(_rule_columns(exp))} is judged batch by batch "
                f"only when its columns include {PARTITION_COLUMN} (batches are disjoint by subject)."
            )


def judged_expectations(suite: dict[str, Any], rules: Collection[str] | None) -> list[dict[str, Any]]:
    """The suite's expectations whose meta.rule is in ``rules`` (all for None), in suite order."""
    if rules is None:
        return list(suite["expectations"])
    unknown = set(rules) - {e["meta"]["rule"] for e in suite["expectations"]}
    if unknown:
        raise ValueError(f"contract {suite['name']} has no rule {', '.join(sorted(unknown))}")
    return [e for e in suite["expectations"] if e["meta"]["rule"] in rules]


def _rule_columns(exp: dict[str, Any]) -> list[str]:
    kwargs = exp.get("kwargs") or {}
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or [])


def suite_columns(suite: dict[str, Any]) -> list[str]:
    """The columns a suite reads (its rules' columns and the example columns), in first-use order;
    a table-wide rule (columns set) is judged on the table's schema, not on these."""
    names: list[str] = []
    for exp in suite["expectations"]:
        names += _rule_columns(exp)
    names += (suite.get("meta") or {}).get("example_columns", [])
    return list(dict.fromkeys(names))


@dataclass
class _RowTally:
    """One row rule's counts merged over batches."""

    unexpected: int = 0
    considered: int = 0
    elements: int = 0
    examples: list[Any] = field(default_factory=list)
    first: Any = None  # the first GX result with details (its error, if any)
    detailed: bool = False


def run_contract_batches(
    suite: str | dict[str, Any],
    frames: Iterable[pd.DataFrame],
    *,
    columns: Sequence[str] | None = None,
    order_examples_by: Sequence[str] | None = None,
    rules: Collection[str] | None = None,
) -> ContractResult:
    """Validate a table given as a sequence of DataFrames; the result equals
    ``run_contract(suite, pd.concat(frames))`` while only one batch is in memory at a time.

    Every batch must have the same columns and dtypes. When the suite has unique rules (they all
    include subject_id, see check_batchable), batches must not share a subject: a violation is
    refused with a plain message rather than answered wrongly. Merging: row rules add their
    unexpected and considered counts and judge ``mostly`` on the totals (GX's own formula);
    examples are the first ones in batch order (or the smallest by ``order_examples_by``, for
    batches each in that order); the row count is the sum; a unique value count is taken over
    the union of the batches' distinct values; columns-set and type rules are judged on the first
    batch (a type rule again where int conversion (_gx_frame) differs between batches).

    ``columns``: the table's full column list when the frames hold only the columns the suite
    reads (a dataset read by suite_columns): the columns-set rule is then judged on an empty
    frame with these columns and the first batch's dtypes.

    ``rules``: judge only these rules (meta.rule) and report only theirs, in suite order; each is
    judged exactly as in a run of the whole suite (its outcome depends on no other rule; the int
    conversion of a column still follows the whole suite's type rules).
    """
    import pandas as pd

    if isinstance(suite, str):
        suite = load_suite(suite)
    check_batchable(suite)
    expectations = judged_expectations(suite, rules)
    row_rules = [e for e in expectations if e["type"] in ROW_RULE_TYPES]
    has_unique = any(e["type"] in UNIQUE_RULE_TYPES for e in expectations)
    distinct_columns = {
        e["kwargs"]["column"] for e in expectations if e["type"] == "expect_column_unique_value_count_to_be_between"
    }
    tallies = {e["meta"]["rule"]: _RowTally() for e in row_rules}
    first_batch: dict[str, Any] = {}  # rule -> GX result on the first batch (table-level rules)
    type_results: dict[str, dict[bool, Any]] = {}  # type rule -> {column converted: GX result}
    distinct: dict[str, Any] = {}
    subjects: Any = None
    rows = 0
    reference: pd.DataFrame | None = None  # the first batch: columns and dtypes every batch must have
    example_columns: list[str] = []
    empty: pd.DataFrame | None = None
    table_judged = False  # the table-level rules are judged on the first batch with rows
    validated = 0

    for number, frame in enumerate(frames, start=1):
        if empty is None:
            empty = frame.iloc[:0]
        if frame.empty:
            continue
        if reference is None:
            reference = frame.iloc[:0]
            example_columns = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in frame.columns]
        else:
            _check_same_shape(suite["name"], number, reference, frame)
        if has_unique and PARTITION_COLUMN in frame.columns:
            subjects = _check_disjoint(suite["name"], number, subjects, frame[PARTITION_COLUMN])
        for column in distinct_columns & set(frame.columns):
            distinct[column] = _union(distinct.get(column), frame[column])
        rows += len(frame)
        validated += 1

        gx_frame, converted = _gx_frame_converted(frame, suite)
        todo = list(row_rules)
        if not table_judged:
            todo += [e for e in expectations if e["type"] not in ROW_RULE_TYPES]
        else:
            # A type rule is judged again only where this batch's int conversion is new.
            todo += [
                e
                for e in expectations
                if e["type"] == "expect_column_values_to_be_in_type_list"
                and (e["kwargs"]["column"] in converted) not in type_results[e["meta"]["rule"]]
            ]
        held, by_rule = _validate(suite, gx_frame, todo, example_columns, f"batch {number}")
        for exp in todo:
            rule = exp["meta"]["rule"]
            r = by_rule.get(rule)
            if exp["type"] == "expect_column_values_to_be_in_type_list":
                type_results.setdefault(rule, {})[exp["kwargs"]["column"] in converted] = r
            elif exp["type"] not in ROW_RULE_TYPES:
                first_batch[rule] = r
            else:
                _tally(tallies[rule], exp, frame, held.get(rule), r, example_columns)
        table_judged = True
        # Let this batch go before the next is read: otherwise two batches are in memory at once.
        del frame, gx_frame

    if reference is None:
        # No rows at all: nothing to merge; GX judges the (empty) table itself.
        if empty is None:
            raise ValueError(f"contract {suite['name']}: no batches to validate (not even an empty one)")
        if columns is not None:
            empty = empty.reindex(columns=list(columns))
        whole = run_contract(suite, empty)
        if rules is None:
            return whole
        judged = {e["meta"]["rule"] for e in expectations}
        return dataclasses.replace(whole, outcomes=tuple(o for o in whole.outcomes if o.rule in judged))
    table_columns = set(reference.columns) if columns is None else set(columns)
    if columns is not None and list(columns) != list(reference.columns):
        # The batches hold only some columns: the columns-set rule sees the whole table's names.
        shape = pd.DataFrame({c: reference[c] if c in reference.columns else pd.Series(dtype=object) for c in columns})
        set_rules = [e for e in expectations if e["type"] == "expect_table_columns_to_match_set"]
        if set_rules:
            _, by_rule = _validate(suite, shape, set_rules, [], "schema")
            first_batch.update(by_rule)

    outcomes = []
    for exp in expectations:
        rule = exp["meta"]["rule"]
        kind = exp["type"]
        if kind in ROW_RULE_TYPES:
            outcomes.append(
                _merged_row_rule(exp, tallies[rule], rows, example_columns, set(reference.columns), order_examples_by)
            )
        elif kind == "expect_column_values_to_be_in_type_list":
            found = type_results.get(rule, {})
            r = found.get(False, found.get(True))  # an unconverted batch is what the whole table shows
            outcomes.append(_outcome_or_missing(exp, r, example_columns, table_columns))
        else:
            r = first_batch.get(rule)
            outcome = _outcome_or_missing(exp, r, example_columns, table_columns)
            if kind in COUNTED_TABLE_TYPES and outcome.error is None and r is not None:
                column = exp["kwargs"].get("column")
                value = rows if column is None else _distinct_count(distinct.get(column))
                outcome = _with_observed(outcome, exp, value)
            outcomes.append(outcome)
    return ContractResult(suite=suite["name"], outcomes=tuple(outcomes), rows=rows, batches=validated)


# Rows per GX batch of a dataset (whole buckets up to this; a larger bucket is split by subject).
# GX copies the frame per metric, so a batch's peak memory is several times its frame's. Measured
# on the 100k cohort's bronze datasets (32 buckets of ~210k rows; 2 shared cores, one sitting,
# each twice): nutrition (6.65M rows) in 1M-row batches 16-19 s and 1,009 MB peak, in 250k-row
# batches 14-17 s and 545 MB; fiber (6.72M) 10.2-11.9 s and 637 MB, against 11.0-13.3 s and 452 MB.
BATCH_ROWS = 250_000


# A dataset of at least this many batches (3M rows) has its rules shared out between the caller
# and a worker (run_contract_dataset). A whole suite costs 0.2-0.5 s of CPU per batch (100k
# cohort: fiber 0.18, nutrition 0.33, weight 0.54), and a split saves about half of it; but the
# caller then needs GX itself (its import: 3.3 s of CPU, 4.3-5 s on 2 shared cores, ~190 MB).
# From 12 batches the split pays for that import; below, the whole suite goes to the worker, and
# the run's process never imports GX.
SPLIT_MIN_BATCHES = 12


def run_contract_dataset(
    suite: str | dict[str, Any],
    ref: DatasetRef,
    *,
    batch_rows: int = BATCH_ROWS,
    processes: int = 1,
    min_split_batches: int = SPLIT_MIN_BATCHES,
    rules: Collection[str] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> ContractResult:
    """Validate a committed lake dataset bucket by bucket (run_contract_batches), reading only the
    columns the suite names. Examples are the smallest by the suite's example columns (bronze:
    source_line; silver: subject_id, week), which is what one run over the table in its
    original order shows.

    ``processes`` > 1: the suite is judged in worker processes (lib/contract_workers.py; start
    them early with ``start_workers`` and GX's import overlaps the run's earlier steps). A
    dataset of at least ``min_split_batches`` batches has its rules shared out between this
    process and ``processes - 1`` workers, each reading the same batches but only its rules'
    columns; a smaller one is judged whole by one worker while this process waits (it never
    imports GX). Either way the result is the one a single process gives (each rule's outcome
    depends on no other rule: run_contract_batches's ``rules``). ``rules``: judge only these
    (as run_contract_batches). ``meanwhile``: called here while a worker judges the whole suite
    (this process would only wait); an error in it is ignored."""
    if isinstance(suite, str):
        suite = load_suite(suite)
    check_batchable(suite)
    expectations = judged_expectations(suite, rules)
    if processes > 1:
        groups = rule_groups(expectations, processes, text_columns(ref))
        if len(groups) > 1 and len(dataset_batches(ref, [], batch_rows)) >= min_split_batches:
            return _run_in_workers(suite, ref, batch_rows, groups[0], groups[1:], rules)
        return _run_in_workers(
            suite, ref, batch_rows, None, [[e["meta"]["rule"] for e in expectations]], rules, meanwhile
        )
    return _judge_dataset(suite, ref, batch_rows, rules)


def start_workers(processes: int) -> None:
    """Start the worker processes ``run_contract_dataset(processes=...)`` will use, now: each
    imports GX while the caller gets on with other work (a run's ingest)."""
    if processes > 1:
        from potato_assets.lib import contract_workers

        contract_workers.workers(processes - 1)


def stop_workers() -> None:
    """End the worker processes (the next ``run_contract_dataset`` that needs one starts it)."""
    from potato_assets.lib import contract_workers

    contract_workers.close_all()


def _judge_dataset(
    suite: dict[str, Any],
    ref: DatasetRef,
    batch_rows: int,
    rules: Collection[str] | None,
    before_batch: Callable[[], None] | None = None,
) -> ContractResult:
    """run_contract_dataset in this process (``before_batch`` is called before each batch is read)."""
    present = set(ref.columns)
    judged = {**suite, "expectations": judged_expectations(suite, rules)}
    wanted = [c for c in suite_columns(judged) if c in present]
    example_columns = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in present]
    readers = dataset_batches(ref, wanted, batch_rows)

    def frames() -> Iterator[pd.DataFrame]:
        for read in readers:
            if before_batch is not None:
                before_batch()
            # Each batch in example order, so its first few examples are its smallest and the
            # merged first few the table's (buckets hold subjects, not file order).
            yield _sorted(read(), example_columns)

    return run_contract_batches(
        suite, frames(), columns=ref.columns, order_examples_by=example_columns or None, rules=rules
    )


# What judging a rule, and reading its column, costs per batch, in units of a row rule on a number
# column (rule_groups). Measured per column on the 100k cohort's bronze datasets (27-32 batches,
# this process alone, CPU s): a number column's range and type rules 0.5 s; a text column read
# 2-2.3 s before any rule (pandas makes a Python string per value); a `mostly` rule (details on
# every batch) ~1 s; subject_id's rules with the compound unique rule 1.8 s. Table-level and type
# rules are judged on the first batch only.
ROW_RULE_COST = 1.0
ALLOWANCE_COST = 2.5
UNIQUE_RULE_COST = 3.0
TABLE_RULE_COST = 0.1
READ_COST = 0.25
TEXT_READ_COST = 5.0


def rule_groups(expectations: list[dict[str, Any]], parts: int, text_columns: Collection[str] = ()) -> list[list[str]]:
    """The rules shared out into at most ``parts`` groups of about equal cost, each group's rules in
    suite order. Rules on the same column stay together (one process reads the column); the
    costliest columns are placed first, each in the cheapest group so far. ``text_columns``: the
    columns stored as text (the dearest to read)."""
    by_column: dict[str, list[dict[str, Any]]] = {}
    for exp in expectations:
        by_column.setdefault((_rule_columns(exp) or [""])[0], []).append(exp)

    def cost(column: str, rules: list[dict[str, Any]]) -> float:
        total = 0.0 if not column else TEXT_READ_COST if column in text_columns else READ_COST
        for exp in rules:
            if exp["type"] not in ROW_RULE_TYPES:
                total += TABLE_RULE_COST
            elif exp["type"] in UNIQUE_RULE_TYPES:
                total += UNIQUE_RULE_COST
            else:
                total += ALLOWANCE_COST if _needs_details(exp, True) else ROW_RULE_COST
        return total

    costs = {column: cost(column, rules) for column, rules in by_column.items()}
    columns = sorted(by_column, key=lambda column: -costs[column])  # stable: suite order on ties
    groups: list[list[dict[str, Any]]] = [[] for _ in range(max(1, min(parts, len(columns))))]
    loads = [0.0] * len(groups)
    for column in columns:
        cheapest = loads.index(min(loads))
        groups[cheapest] += by_column[column]
        loads[cheapest] += costs[column]
    order = {id(e): i for i, e in enumerate(expectations)}
    return [[e["meta"]["rule"] for e in sorted(g, key=lambda e: order[id(e)])] for g in groups]


def text_columns(ref: DatasetRef) -> set[str]:
    """The dataset's columns stored as text (or dictionary-encoded)."""
    import pyarrow as pa

    return {
        f.name
        for f in ref.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
    }


class ContractWorkerDied(RuntimeError):
    """A worker process judging some of a suite's rules ended before it replied."""


class _OtherPartFailed(Exception):
    """A worker's part raised: this process stops its own part (the error is reproduced below)."""


# One split at a time: its workers answer one task each, in order.
_SPLIT_LOCK = threading.Lock()


def _run_in_workers(
    suite: dict[str, Any],
    ref: DatasetRef,
    batch_rows: int,
    mine: list[str] | None,
    theirs: list[list[str]],
    rules: Collection[str] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> ContractResult:
    """Each of ``theirs`` judged in a worker and ``mine`` here (None: nothing here, this process
    calls ``meanwhile`` and waits), at the same time; the outcomes put back in suite order. Any
    error in any part: the whole suite is judged once more here, in one process, so the error
    raised is exactly the one (the first one) a single run raises. A worker that dies fails the
    check with ContractWorkerDied (no result is made up). ``rules``: the rules the caller asked
    for (all for None), which ``mine`` and ``theirs`` share out."""
    from potato_assets.lib import contract_workers

    with _SPLIT_LOCK:
        pool = contract_workers.workers(len(theirs))
        replies: dict[int, tuple[str, Any]] = {}

        def others_go_on() -> None:
            for i, worker in enumerate(pool):
                if i not in replies and worker.replied():
                    replies[i] = worker.reply()
                if replies.get(i, ("ok",))[0] != "ok":
                    raise _OtherPartFailed(replies[i][1])

        failed = False
        try:
            for worker, group in zip(pool, theirs, strict=True):
                worker.submit(_judge_dataset, suite, ref, batch_rows, group)
            if mine is None and meanwhile is not None:
                with contextlib.suppress(Exception):  # its own work; the contract does not need it
                    meanwhile()
            own = None if mine is None else _judge_dataset(suite, ref, batch_rows, mine, before_batch=others_go_on)
            for i, worker in enumerate(pool):
                if i not in replies:
                    replies[i] = worker.reply()
            others_go_on()
        except contract_workers.WorkerDied as exc:
            raise ContractWorkerDied(
                f"contract {suite['name']}: {exc}, so the check was not judged (the next contract run "
                f"starts a new worker)."
            ) from None
        except Exception:
            failed = True
        finally:
            # A part still running is no longer wanted (an error, an interrupt): end its worker.
            for worker in pool:
                if worker.busy:
                    contract_workers.discard(worker)
    if failed:
        return _judge_dataset(suite, ref, batch_rows, rules)
    parts = [*([] if own is None else [own]), *(replies[i][1] for i in range(len(pool)))]
    first = parts[0]
    if any((p.rows, p.batches) != (first.rows, first.batches) for p in parts):
        # Cannot happen (every part reads the same batches); never merge parts that disagree.
        return _judge_dataset(suite, ref, batch_rows, rules)
    by_rule = {o.rule: o for p in parts for o in p.outcomes}
    return ContractResult(
        suite=suite["name"],
        outcomes=tuple(by_rule[e["meta"]["rule"]] for e in suite["expectations"] if e["meta"]["rule"] in by_rule),
        rows=first.rows,
        batches=first.batches,
    )


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if not by or len(frame) < 2:
        return frame
    return frame.sort_values(by, kind="stable", na_position="last", ignore_index=True)


def dataset_batches(ref: DatasetRef, columns: list[str], batch_rows: int = BATCH_ROWS) -> list[Any]:
    """Readers (call one to get its frame) of the dataset in batches of whole buckets, in bucket
    order, each up to ``batch_rows`` rows by the manifest's counts; a bucket larger than that is
    read alone and split by subject (subjects never straddle two batches). One reader for an
    empty dataset, giving an empty frame with the columns."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    sizes = [0] * ref.buckets
    for f in ref.files:
        sizes[f.bucket] += f.rows
    readers: list[Any] = []
    group: list[int] = []
    rows = 0
    for bucket in range(ref.buckets):
        if not sizes[bucket]:
            continue
        if sizes[bucket] > batch_rows:
            if group:
                readers.append(_reader(ref, group, columns))
                group, rows = [], 0
            readers += _split_readers(ref, bucket, columns, -(-sizes[bucket] // batch_rows))
            continue
        if rows + sizes[bucket] > batch_rows and group:
            readers.append(_reader(ref, group, columns))
            group, rows = [], 0
        group.append(bucket)
        rows += sizes[bucket]
    if group:
        readers.append(_reader(ref, group, columns))
    return readers or [_reader(ref, [0], columns)]


def _reader(ref: DatasetRef, buckets: list[int], columns: list[str]) -> Any:
    def read() -> pd.DataFrame:
        import pandas as pd

        frames = [ref.read_bucket(b, columns) for b in buckets]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    return read


def _split_readers(ref: DatasetRef, bucket: int, columns: list[str], parts: int) -> list[Any]:
    """Readers of a large bucket's subject groups (DatasetRef.iter_bucket_parts), to be called in
    order: the first reads the bucket, as Arrow, and each hands over its own part."""
    groups: Iterator[tuple[int, pd.DataFrame]] | None = None

    def reader(part: int) -> Any:
        def read() -> pd.DataFrame:
            nonlocal groups
            if groups is None:
                groups = enumerate(ref.iter_bucket_parts(bucket, columns, parts))
            got, frame = next(groups, (None, None))
            if got != part or frame is None:
                raise RuntimeError(f"{ref.root}: bucket {bucket}'s parts must be read in order (part {part} asked)")
            if part == parts - 1:
                groups = iter(())  # the readers outlive the read: let the bucket's Arrow table go
            return frame

        return read

    return [reader(part) for part in range(parts)]


def _validate(
    suite: dict[str, Any],
    frame: pd.DataFrame,
    expectations: list[dict[str, Any]],
    example_columns: list[str],
    label: str,
) -> tuple[dict[str, bool], dict[str, Any]]:
    """GX's two passes (module docstring) over one batch for some of a suite's expectations:
    whether each held, and the detailed results of those that need details."""
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLE_COUNT}
    if example_columns:
        result_format["unexpected_index_column_names"] = example_columns
    runner = _runner()
    with runner.lock:
        batch_definition, _ = runner.prepared(suite)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        try:
            first = batch.validate(
                runner.subset_suite(suite, expectations, "all"), result_format={"result_format": "BOOLEAN_ONLY"}
            )
            held = {r.expectation_config.meta.get("rule"): bool(r.success) for r in first.results}
            detailed = [exp for exp in expectations if _needs_details(exp, held.get(exp["meta"]["rule"]))]
            by_rule: dict[str, Any] = {}
            if detailed:
                second = batch.validate(runner.subset_suite(suite, detailed, "details"), result_format=result_format)
                by_rule = {r.expectation_config.meta.get("rule"): r for r in second.results}
        finally:
            runner.release_batches()
    return held, by_rule


def _check_same_shape(name: str, number: int, reference: pd.DataFrame, frame: pd.DataFrame) -> None:
    if list(frame.columns) != list(reference.columns):
        raise ValueError(
            f"contract {name}: batch {number} has columns {list(frame.columns)}, the first batch "
            f"{list(reference.columns)}; every batch of one table must have the same columns."
        )
    for column in reference.columns:
        if frame[column].dtype != reference[column].dtype:
            raise ValueError(
                f"contract {name}: batch {number} has column {column!r} as {frame[column].dtype}, the first "
                f"batch as {reference[column].dtype}; every batch of one table must have the same types."
            )


def _check_disjoint(name: str, number: int, seen: Any, values: pd.Series) -> Any:
    import pandas as pd

    here = pd.Index(values.unique())
    if seen is not None:
        shared = seen.intersection(here)
        if len(shared):
            raise ValueError(
                f"contract {name}: {PARTITION_COLUMN} {shared[0]!r} is in batch {number} and in an earlier "
                f"one; unique rules are judged batch by batch, so batches must not share a {PARTITION_COLUMN}."
            )
        return seen.append(here)
    return here


def _union(seen: Any, values: pd.Series) -> Any:
    """The distinct non-null values so far (GX counts distinct values with nunique: nulls left out)."""
    import pandas as pd

    here = pd.Index(values.dropna().unique())
    return here if seen is None else seen.union(here)


def _distinct_count(values: Any) -> int:
    return 0 if values is None else int(values.nunique())


def _considered(exp: dict[str, Any], frame: pd.DataFrame) -> int:
    """How many rows GX judges the rule on (its unexpected percent's denominator and the base of
    ``mostly``): all rows for not-null; rows whose column is not null for the other column rules;
    rows not missing every column for compound unique (GX's ignore_row_if default)."""
    kind = exp["type"]
    if kind == "expect_column_values_to_not_be_null":
        return len(frame)
    columns = [c for c in _rule_columns(exp) if c in frame.columns]
    if not columns:
        return len(frame)
    if kind == "expect_compound_columns_to_be_unique":
        ignore = (exp.get("kwargs") or {}).get("ignore_row_if", "all_values_are_missing")
        missing = frame[columns].isna()
        if ignore == "any_value_is_missing":
            return int((~missing.any(axis=1)).sum())
        if ignore == "never":
            return len(frame)
        return int((~missing.all(axis=1)).sum())
    return int(frame[columns[0]].notna().sum())


def _tally(
    tally: _RowTally,
    exp: dict[str, Any],
    frame: pd.DataFrame,
    held: bool | None,
    r: Any,
    example_columns: list[str],
) -> None:
    tally.elements += len(frame)
    tally.considered += _considered(exp, frame)
    if r is None:
        if held:
            return  # held with no allowance: no unexpected rows here
        r = False  # GX gave nothing: reported as such
    if tally.first is None:
        tally.first = r
    if r is False:
        return
    tally.detailed = True
    res = r.result or {}
    tally.unexpected += int(res.get("unexpected_count") or 0)
    # Each batch's first few: enough for the first few overall, in batch order or sorted.
    tally.examples += _examples(res, example_columns)


def _examples(res: dict[str, Any], example_columns: list[str]) -> list[Any]:
    if res.get("partial_unexpected_index_list") and example_columns:
        return [_plain(e) for e in res["partial_unexpected_index_list"][:EXAMPLE_COUNT]]
    if res.get("partial_unexpected_list"):
        return [_plain(e) for e in res["partial_unexpected_list"][:EXAMPLE_COUNT]]
    return []


def _merged_row_rule(
    exp: dict[str, Any],
    tally: _RowTally,
    rows: int,
    example_columns: list[str],
    columns: set[str],
    order_examples_by: Sequence[str] | None,
) -> ExpectationOutcome:
    mostly = (exp.get("kwargs") or {}).get("mostly")
    if tally.first is False:
        return _no_result(exp)
    if tally.first is not None:
        # An absent column or a GX error shows in every batch alike: the first batch's says it.
        first = _outcome(exp, tally.first, example_columns, columns)
        if first.error:
            return first
    # GX (_mostly_success): vacuously true on no rows considered.
    considered = tally.considered
    success = considered == 0 or (considered - tally.unexpected) / considered >= (1 if mostly is None else mostly)
    if success and not _needs_details(exp, True):
        return _clean_row_rule(exp)
    percent = None
    if rows > 0 and considered > 0:
        percent = round(float(tally.unexpected / considered * 100), 4)
    examples = tally.examples
    if order_examples_by:
        examples = sorted(examples, key=lambda e: _example_key(e, order_examples_by))
    return ExpectationOutcome(
        rule=exp["meta"]["rule"],
        expectation=exp["type"],
        kwargs=_plain(exp.get("kwargs", {})),
        severity=exp.get("severity", "critical"),
        success=bool(success),
        why=exp["meta"].get("why", ""),
        unexpected_count=tally.unexpected,
        unexpected_percent=percent,
        unexpected_examples=examples[:EXAMPLE_COUNT],
    )


def _example_key(example: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    if not isinstance(example, dict):
        return ()
    return tuple((example.get(k) is None, example.get(k) or 0) for k in keys)


def _needs_details(exp: dict[str, Any], held: bool | None) -> bool:
    """Whether the second pass must compute this rule's details (see the module docstring)."""
    allows_some = (exp.get("kwargs") or {}).get("mostly") not in (None, 1, 1.0)
    return not held or exp["type"] not in ROW_RULE_TYPES or allows_some


def _no_result(exp: dict[str, Any]) -> ExpectationOutcome:
    return ExpectationOutcome(
        exp["meta"]["rule"],
        exp["type"],
        exp.get("kwargs", {}),
        exp.get("severity", "critical"),
        False,
        why=exp["meta"].get("why", ""),
        error="GX returned no result for this expectation",
    )


def _outcome_or_missing(
    exp: dict[str, Any], r: Any, example_columns: list[str], columns: set[str]
) -> ExpectationOutcome:
    return _no_result(exp) if r is None else _outcome(exp, r, example_columns, columns)


def _with_observed(outcome: ExpectationOutcome, exp: dict[str, Any], value: int) -> ExpectationOutcome:
    """A counted table rule with the merged count, judged as GX judges a metric between bounds."""
    kwargs = exp.get("kwargs") or {}
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    above = low is None or (value > low if kwargs.get("strict_min") else value >= low)
    below = high is None or (value < high if kwargs.get("strict_max") else value <= high)
    return dataclasses.replace(outcome, observed_value=_plain(value), success=bool(above and below))


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
    return _gx_frame_converted(df, suite)[0]


def _gx_frame_converted(df: pd.DataFrame, suite: dict[str, Any]) -> tuple[pd.DataFrame, set[str]]:
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
    return (frame.assign(**converted) if converted else frame), set(converted)


def _outcome(exp: dict[str, Any], r: Any, example_columns: list[str], columns: set[str]) -> ExpectationOutcome:
    res = r.result or {}
    column = exp.get("kwargs", {}).get("column")
    # GX's own message for an absent column varies by expectation (even "list index out of range").
    error = f"column {column!r} does not exist" if column is not None and column not in columns else None
    examples = _examples(res, example_columns)
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
