"""The OpenLineage sink: one job per asset and per asset check, each a child of the Dagster run.

One job per asset, not per step: a multi-asset step (`ingest_landing`, `fit_models`) writes
several datasets with different upstreams, and only per-asset jobs give each dataset its true
inputs (bronze/weight reads only Potato_tidy.csv). Each asset check is its own job whose input
carries the dataQualityAssertions facet; downstream jobs repeat the outcomes known so far on
their inputs.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from potato_assets.lib.observe import lineage
from potato_assets.lib.observe.graph import EXTENSIONS_BY_KIND, ProjectGraph, asset_uris
from potato_assets.lib.observe.run_state import RunState, StepState
from potato_assets.lib.observe.sinks import Failure, Sink

FILE_EXTENSIONS = tuple(ext for exts in EXTENSIONS_BY_KIND.values() for ext in exts)


def lineage_job_name(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def check_job_name(check: dg.AssetCheckKey) -> str:
    return f"{lineage_job_name(check.asset_key)}.check.{check.name}"


class OpenLineageSink(Sink):
    def __init__(self, emitter: Any, namespace: str, graph: ProjectGraph, settings: Any) -> None:
        self.emitter, self.namespace, self.graph, self.settings = emitter, namespace, graph, settings

    # -- events ----------------------------------------------------------------------------------

    def run_started(self, run: RunState) -> None:
        self._send(lineage.START, self._run_job(run))

    def step_started(self, run: RunState, step: StepState) -> None:
        for key in step.plan.assets:
            self._send(lineage.START, self._asset_job(run, key))
        for check in step.plan.checks:
            self._send(lineage.START, self._check_job(run, check))

    def step_ended(self, run: RunState, step: StepState, error: Failure) -> None:
        for key in step.plan.assets:
            job = self._asset_job(run, key)
            if error is None:
                self._send(lineage.COMPLETE, job)
            else:
                self._send(lineage.FAIL, job, error)
        for check in step.plan.checks:
            self._send(lineage.COMPLETE if error is None else lineage.FAIL, self._check_job(run, check), error)

    def run_ended(self, run: RunState, error: Failure) -> None:
        self._send(lineage.COMPLETE if error is None else lineage.FAIL, self._run_job(run), error)

    # -- jobs and datasets -----------------------------------------------------------------------

    def _send(self, event_type: str, job: Any, error: Failure = None) -> None:
        message, stack = error if error else (None, None)
        self.emitter.emit(lineage.build_run_event(event_type, job, error_message=message, error_stack=stack))

    def _run_job(self, run: RunState) -> Any:
        return lineage.JobRun(namespace=self.namespace, name=run.job_name, run_id=run.run_id, job_type="JOB")

    def _parent(self, run: RunState) -> Any:
        return lineage.ParentRun(self.namespace, run.job_name, run.run_id)

    def _dataset(self, run: RunState, key: dg.AssetKey, *, output: bool) -> list[Any]:
        known = run.assets.get(key, {})
        infos = []
        for uri in asset_uris(key, self.graph, self.settings):
            info = lineage.DatasetInfo(uri=uri, columns=known.get("columns"))
            if not uri.endswith(FILE_EXTENSIONS):  # a table (object or dataset), not a figure or page
                info.rows = known.get("rows") if output else None
            if output:
                info.column_lineage = self._column_lineage(key)
            else:
                info.assertions = [
                    lineage.Assertion(
                        name=c["name"],
                        success=c["passed"],
                        severity=c["severity"],
                        description=c["description"],
                    )
                    for c in run.assertions.get(key, {}).values()
                ] or None
            infos.append(info)
        return infos

    def _column_lineage(self, key: dg.AssetKey) -> Any:
        declared = self.graph.metadata(key).get("dagster/column_lineage")
        table = getattr(declared, "value", declared)
        deps_by_column = getattr(table, "deps_by_column", None)
        if not deps_by_column:
            return None
        return {
            column: [(asset_uris(dep.asset_key, self.graph, self.settings)[0], dep.column_name) for dep in deps]
            for column, deps in deps_by_column.items()
        }

    def _asset_job(self, run: RunState, key: dg.AssetKey) -> Any:
        name = lineage_job_name(key)
        inputs = [i for parent in self.graph.parents(key) for i in self._dataset(run, parent, output=False)]
        return lineage.JobRun(
            namespace=self.namespace,
            name=name,
            run_id=lineage.step_run_id(run.run_id, name),
            job_type="ASSET",
            inputs=inputs,
            outputs=self._dataset(run, key, output=True),
            parent=self._parent(run),
            description=self.graph.description(key),
        )

    def _check_job(self, run: RunState, check: dg.AssetCheckKey) -> Any:
        name = check_job_name(check)
        inputs = self._dataset(run, check.asset_key, output=False)
        for info in inputs:  # this job's input carries only its own assertion
            info.assertions = [a for a in (info.assertions or []) if a.name == check.name] or None
        return lineage.JobRun(
            namespace=self.namespace,
            name=name,
            run_id=lineage.step_run_id(run.run_id, name),
            job_type="ASSET_CHECK",
            inputs=inputs,
            outputs=[],
            parent=self._parent(run),
        )
