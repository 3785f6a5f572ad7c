"""Run a data contract (lib/contracts.py) as a Dagster asset check and map its result to metadata.

A broken hard rule ("critical") fails the check with severity ERROR, so a blocking check stops
everything downstream in the run; broken soft rules only ("warning") fail it with severity WARN,
which shows in the UI but lets the run go on.
"""

from typing import Any

import dagster as dg

from potato_assets.defs.common import DataFrame
from potato_assets.lib import contracts, markdown
from potato_assets.settings import BUNDLED_CONTRACTS_DIR, PROJECT_DIR, get_settings


def contract_label(suite_name: str) -> str:
    """The suite file as a reader finds it: repository-relative when it is under the checkout."""
    path = contracts.suite_path(suite_name, get_settings().contracts_dir)
    if get_settings().contracts_dir == BUNDLED_CONTRACTS_DIR:
        return path.relative_to(PROJECT_DIR).as_posix()
    return str(path)


def contract_check_result(result: contracts.ContractResult) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if result.hard_failures else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        "contract": contract_label(result.suite),
        "rows_checked": result.rows,
        "expectations": len(result.outcomes),
        "failed_hard": len(result.hard_failures),
        "failed_soft": len(result.soft_failures),
        "results": dg.MetadataValue.md(results_markdown(result)),
    }
    for outcome in result.outcomes:
        metadata[f"rule/{outcome.rule}"] = dg.MetadataValue.json(outcome.as_dict())
    return dg.AssetCheckResult(
        passed=result.success, severity=severity, description=result.summary(), metadata=metadata
    )


def results_markdown(result: contracts.ContractResult) -> str:
    lines = [
        "| rule | severity | passed | observed | unexpected | examples |",
        "|---|---|---|---|---|---|",
    ]
    for o in result.outcomes:
        observed = o.error or ("" if o.observed_value is None else str(o.observed_value))
        examples = ", ".join(str(e) for e in o.unexpected_examples[:3])
        lines.append(
            f"| {o.rule} | {o.severity} | {'yes' if o.success else '**no**'} | {_cell(observed)} | "
            f"{'' if o.unexpected_count is None else o.unexpected_count} | {_cell(examples)} |"
        )
    return "\n".join(lines)


def _cell(text: str, limit: int = markdown.CELL_CHARS) -> str:
    # Observed values and examples come from the data: escaped Markdown, cut short.
    return markdown.cell(text, limit)


def contract_check(asset_key: dg.AssetKey, suite_name: str, *, blocking: bool) -> dg.AssetChecksDefinition:
    """An asset check named `contract` that validates the stored asset against its suite file."""
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
            f"{hard} hard rules (ERROR{', blocks downstream' if blocking else ''}), {soft} soft rules (WARN). "
            + str(suite.get("notes", ""))
        ),
    )
    def _contract(value: DataFrame) -> dg.AssetCheckResult:
        # Read again at run time: the run judges the file as it is now.
        suite = contracts.load_suite(suite_name, get_settings().contracts_dir)
        return contract_check_result(contracts.run_contract(suite, value))

    return _contract
