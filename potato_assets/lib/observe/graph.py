"""The project's asset graph as the instance handler reads it: which assets and checks each step
runs, each asset's parents, kinds and stored objects.

Taken from the definitions the run process has already built (`definitions.defs` is built once
per process), resolved once per process on the first run record.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import dagster as dg

# Layers by the first part of an asset key; anything else (e.g. a test's assets) is "other".
LAYERS = ("landing", "bronze", "silver", "gold")
# Where non-parquet assets keep their objects under the lake, by the asset's kinds.
EXTENSIONS_BY_KIND = {"png": (".png",), "markdown": (".md",), "html": (".html",)}


@dataclass
class StepPlan:
    assets: list[dg.AssetKey]
    checks: list[dg.AssetCheckKey]


class ProjectGraph:
    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.steps: dict[str, StepPlan] = {}
        self.blocking: dict[dg.AssetCheckKey, bool] = {}
        self.check_descriptions: dict[dg.AssetCheckKey, str | None] = {}
        for ad in graph.assets_defs:
            if not ad.is_executable:
                continue
            plan = self.steps.setdefault(ad.node_def.name, StepPlan([], []))
            plan.assets.extend(k for k in ad.keys if graph.has(k) and graph.get(k).is_materializable)
            plan.checks.extend(ad.check_keys)
            for spec in ad.check_specs:
                self.blocking[spec.key] = bool(spec.blocking)
                self.check_descriptions[spec.key] = spec.description

    def plan(self, step_key: str) -> StepPlan:
        """A copy of what the step runs (a run may add assets the graph does not know)."""
        plan = self.steps.get(step_key)
        return StepPlan(list(plan.assets), list(plan.checks)) if plan else StepPlan([], [])

    def has(self, key: dg.AssetKey) -> bool:
        return self.graph.has(key)

    def parents(self, key: dg.AssetKey) -> list[dg.AssetKey]:
        return sorted(self.graph.get(key).parent_keys, key=lambda k: k.to_user_string()) if self.has(key) else []

    def metadata(self, key: dg.AssetKey) -> dict[str, Any]:
        return dict(self.graph.get(key).metadata) if self.has(key) else {}

    def kinds(self, key: dg.AssetKey) -> set[str]:
        return set(self.graph.get(key).kinds) if self.has(key) else set()

    def description(self, key: dg.AssetKey) -> str | None:
        return self.graph.get(key).description if self.has(key) else None


_GRAPH: ProjectGraph | None = None
_GRAPH_LOCK = threading.Lock()


def project_graph() -> ProjectGraph:
    global _GRAPH
    with _GRAPH_LOCK:
        if _GRAPH is None:
            from potato_assets.definitions import defs

            _GRAPH = ProjectGraph(defs().resolve_asset_graph())
        return _GRAPH


def layer_of(key: dg.AssetKey) -> str:
    return key.path[0] if key.path and key.path[0] in LAYERS else "other"


def asset_uris(key: dg.AssetKey, graph: ProjectGraph, settings: Any) -> list[str]:
    """The objects an asset is stored as: the naming both ends of a lineage edge agree on."""
    from potato_assets.lib.lake import storage

    file_name = graph.metadata(key).get("file_name")
    if layer_of(key) == "landing" and file_name is not None:
        return [storage.join(settings.landing_uri, str(getattr(file_name, "value", file_name)))]
    relative = "/".join(key.path)
    from potato_assets.lib.lake.datasets import LAYOUT_KEY

    if LAYOUT_KEY in graph.metadata(key):
        # A bucketed dataset is one table under its root folder, whatever version is current.
        return [storage.join(settings.lake_uri, relative)]
    extensions: list[str] = []
    for kind in sorted(graph.kinds(key)):
        extensions.extend(EXTENSIONS_BY_KIND.get(kind, ()))
    return [storage.join(settings.lake_uri, relative + ext) for ext in (extensions or [".parquet"])]
