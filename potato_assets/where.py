"""Print where the lake and the report are (used by `make run`)."""

from potato_assets.lib.lake.storage import join
from potato_assets.settings import load_settings

if __name__ == "__main__":
    settings = load_settings()
    print(f"Landing zone: {settings.landing_uri}")
    print(f"Lake:         {settings.lake_uri}")
    print(f"Report:       {join(settings.lake_uri, 'gold/reports/model_report.html')}")
