"""Run a data contract (lib/contracts.py) as a Dagster asset check and map its result to metadata.

A broken hard rule ("critical") fails the check with severity ERROR, so a blocking check stops
everything downstream in the run; broken soft rules only ("warning") fail it with severity WARN,
which shows in the UI but lets the run go on.

The checked value is what the lake IO manager gives: a DatasetRef for a bucketed dataset, judged
where the contract_engine resource says (POTATO_CONTRACT_ENGINE): in the step, read in bucket
batches, only the columns the suite names (lib/contracts.run_contract_dataset, in
POTATO_CONTRACT_PROCESSES processes), or on silver's Spark cluster
(lib/engine/spark.SparkEngine.contract); or a DataFrame for an asset still stored as one parquet
table, judged in the step.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from potato_assets.defs.resources import ContractEngine
from potato_assets.lib import contracts, markdown
from potato_assets.settings import BUNDLED_CONTRACTS_DIR, PROJECT_DIR, get_settings


def contract_label(suite_name: str) -> str:
    """The suite file as a reader finds it: repository-relative when it is under the checkout."""
    path = contracts.suite_path(suite_name, get_settings().contracts_dir)
    if get_settings().contracts_dir == BUNDLED_CONTRACTS_DIR:
        return path.relative_to(PROJECT_DIR).as_posix()
    return str(path)


# How many offending rows a failed check lists (the console summary prints them).
OFFENDING_ROWS = 5


def contract_check_result(
    result: contracts.ContractResult, source_file: str | None = None, judged_on: str = "step"
) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if result.hard_failures else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        "contract": contract_label(result.suite),
        # Where GX ran: step, or spark (sc://host:port).
        "contract_engine": judged_on,
        "rows_checked": result.rows,
        # GX validations the table took (one per batch of buckets; 1 for a single frame).
        "batches": result.batches,
        "expectations": len(result.outcomes),
        "failed_hard": len(result.hard_failures),
        "failed_soft": len(result.soft_failures),
        # Every rule on one page (the UI opens each metadata entry on its own click).
        "results": dg.MetadataValue.md(results_markdown(result)),
        "rules": dg.MetadataValue.json({o.rule: o.as_dict() for o in result.outcomes}),
    }
    offending = offending_rows(result, source_file)
    if offending:
        metadata["offending_rows"] = dg.MetadataValue.json(offending)
    return dg.AssetCheckResult(
        passed=result.success, severity=severity, description=result.summary(), metadata=metadata
    )


def offending_rows(result: contracts.ContractResult, source_file: str | None) -> list[dict[str, Any]]:
    """Up to OFFENDING_ROWS example rows of the broken rules, hard ones first: rule, file and line
    where the table records them (bronze: source_line), the column and its value."""
    rows: list[dict[str, Any]] = []
    for o in result.hard_failures + result.soft_failures:
        column = o.kwargs.get("column")
        for example in o.unexpected_examples:
            row: dict[str, Any] = {"rule": o.rule}
            if source_file:
                row["file"] = source_file
            if isinstance(example, dict):
                fields = dict(example)
                if "source_line" in fields:
                    row["line"] = fields.pop("source_line")
                if column in fields:
                    row["column"], row["value"] = column, fields.pop(column)
                row.update(fields)
            else:
                if column is not None:
                    row["column"] = column
                row["value"] = example
            rows.append(row)
            if len(rows) == OFFENDING_ROWS:
                return rows
    return rows


def results_markdown(result: contracts.ContractResult) -> str:
    lines = [
        "| rule | severity | passed | observed | unexpected | examples | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in result.outcomes:
        observed = o.error or ("" if o.observed_value is None else str(o.observed_value))
        examples = ", ".join(str(e) for e in o.unexpected_examples[:3])
        lines.append(
            f"| {o.rule} | {o.severity} | {'yes' if o.success else '**no**'} | {_cell(observed)} | "
            f"{'' if o.unexpected_count is None else o.unexpected_count} | {_cell(examples)} | {_cell(o.why)} |"
        )
    return "\n".join(lines)


def _cell(text: str, limit: int = markdown.CELL_CHARS) -> str:
    # Observed values and examples come from the data: escaped Markdown, cut short.
    return markdown.cell(text, limit)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def contract_check(
    asset_key: dg.AssetKey,
    suite_name: str,
    *,
    blocking: bool,
    source_file: str | None = None,
    warm_imports: Sequence[str] = (),
) -> dg.AssetChecksDefinition:
    """An asset check named `contract` that validates the stored asset against its suite file
    (`source_file`: the landing file the table's source_line refers to, for bronze;
    `warm_imports`: what the steps after it import, loaded while a contract worker judges)."""
    # Fail at load time on a malformed contract file.
    suite = contracts.load_suite(suite_name, get_settings().contracts_dir)
    hard = sum(1 for e in suite["expectations"] if e.get("severity", "critical") == "critical")
    soft = len(suite["expectations"]) - hard

    @dg.asset_check(
        asset=asset_key,
        name="contract",
        blocking=blocking,
        description=(
            f"Data contract {contract_label(suite_name)} (Great Expectations): "
            f"{_plural(hard, 'hard rule')} (ERROR{', blocks downstream' if blocking else ''}), "
            f"{_plural(soft, 'soft rule')} (WARN). " + str(suite.get("notes", ""))
        ),
    )
    def _contract(
        context: dg.AssetCheckExecutionContext, value: Any, contract_engine: ContractEngine
    ) -> dg.AssetCheckResult:
        from potato_assets.lib.lake.datasets import DatasetRef

        # Read again at run time: the run judges the file as it is now.
        suite = contracts.load_suite(suite_name, get_settings().contracts_dir)
        if isinstance(value, DatasetRef):
            result = contract_engine.judge(suite, value, context.op_execution_context.op_def.name, warm_imports)
            return contract_check_result(result, source_file, contract_engine.label())
        return contract_check_result(contracts.run_contract(suite, value), source_file)

    _CONTRACT_CHECK_STEPS.add(_contract.node_def.name)
    return _contract


# The op name of every contract check defined: a top-level op runs as the step of its name.
_CONTRACT_CHECK_STEPS: set[str] = set()


def contract_check_steps() -> frozenset[str]:
    return frozenset(_CONTRACT_CHECK_STEPS)
