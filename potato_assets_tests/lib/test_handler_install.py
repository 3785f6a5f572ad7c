"""Lineage and telemetry ride on the instance's log handler: a run on an instance without it says
so, once, in its own log, when an endpoint is set."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs.resources import LakeIOManager
from potato_assets.lib.observe import handler

INSTALLED = {"python_logs": {"dagster_handler_config": {"handlers": {"obs": {"()": handler.HANDLER_PATH}}}}}


@dg.asset
def tiny() -> pd.DataFrame:
    return pd.DataFrame({"a": [1]})


@dg.asset
def tinier(tiny: pd.DataFrame) -> pd.DataFrame:
    return tiny


@pytest.mark.parametrize("variable", ["OPENLINEAGE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "POTATO_PUSHGATEWAY_URL"])
def test_a_run_on_an_instance_without_the_handler_warns_once(variable, monkeypatch, tmp_path):
    for name in handler.HANDLER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [tiny, tinier], resources={"io_manager": LakeIOManager(lake_uri=tmp_path.as_uri())}, instance=instance
        )
        assert result.success
        logs = instance.all_logs(result.run_id)
    warned = [r.user_message for r in logs if r.level == 30 and handler.HANDLER_PATH in r.user_message]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"{variable} set, but this Dagster instance does not install")


def test_no_warning_without_an_endpoint_or_with_the_handler_installed(monkeypatch):
    for name in (*handler.HANDLER_SETTINGS, "POTATO_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        assert handler.missing_handler_warning(instance) is None
        assert not handler.installed_on(instance)
        assert handler.missing_handler_warning(instance, {"POTATO_LOG_FORMAT": "json"}) is not None
    with dg.instance_for_test(overrides=INSTALLED) as instance:
        assert handler.installed_on(instance)
        assert handler.missing_handler_warning(instance, {"OPENLINEAGE_URL": "http://127.0.0.1:9"}) is None
