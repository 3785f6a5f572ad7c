"""After `make run`: what the latest run of the instance (DAGSTER_HOME) did, and where the lake
and the report are. Runs whether the materialisation succeeded or not."""

from potato_assets.lib.lake.storage import join
from potato_assets.settings import load_settings


def summary_lines() -> list[str]:
    import dagster as dg

    from potato_assets.lib.observe import run_summary

    with dg.DagsterInstance.get() as instance:
        run_id = run_summary.latest_run_id(instance)
        if run_id is None:
            return ["No run in this instance yet."]
        return run_summary.render(run_summary.summarize(instance, run_id))


if __name__ == "__main__":
    settings = load_settings()
    print("\n".join(summary_lines()))
    print(f"Landing zone: {settings.landing_uri}")
    print(f"Lake:         {settings.lake_uri}")
    print(f"Report:       {join(settings.lake_uri, 'gold/reports/model_report.html')}")
