"""`make bench`: end-to-end cost of the asset graph by cohort size, on this machine.

For each size (subjects × 12 weeks) it writes a synthetic cohort's landing files with the streaming
generator (timed on its own, in its own process), materialises the whole graph (assets and checks)
with `dagster asset materialize` in a fresh process against a fresh DAGSTER_HOME, and reports wall
time, the peak RSS of that process's whole tree (sampled from /proc, scripts/proc_tree_rss.py) and
of its largest process, and time per layer from Dagster's step stats. It also times `dagster
definitions validate` for this project against a one-asset project. Results print as Markdown
tables and land in bench_results/.

Not a test: numbers depend on the machine. Usage:
    python scripts/bench.py [--sizes 1000,10000,100000,1000000] [--weeks 12] [--repeats 1]
        [--landing-dir /tmp/bench-landing] [--out bench_results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_tree_rss import ProcTreeSampler, run_sampled  # noqa: E402

ONE_ASSET = """import dagster as dg


@dg.asset
def one() -> int:
    return 1


defs = dg.Definitions(assets=[one])
"""
# The same asset as a dg project loaded like this one (load_from_defs_folder), so that the
# comparison isolates what this project adds, not what the components loader costs.
ONE_ASSET_PROJECT = {
    "pyproject.toml": """[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "one_project"
defs_module = "one_project.defs"
""",
    "one_project/__init__.py": "",
    "one_project/definitions.py": """from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
""",
    "one_project/defs/__init__.py": "",
    "one_project/defs/assets.py": """import dagster as dg


@dg.asset
def one() -> int:
    return 1
""",
}


RSS_INTERVAL_S = 0.2
RUN_FIELDS = ("wall_s", "cpu_s", "run_s", "peak_rss_mb", "tree_peak_rss_mb", "largest_process_rss_mb")


def layer_of(step_key: str) -> str:
    if step_key.startswith(("ingest_landing", "bronze")):
        return "bronze"
    if step_key.startswith("silver"):
        return "silver"
    return "gold"


def check_step_keys() -> set[str]:
    """Step keys of the asset checks (asset key as identifier + '_' + check name)."""
    from potato_assets.definitions import defs

    graph = defs().resolve_asset_graph()
    return {f"{key.asset_key.to_python_identifier()}_{key.name}" for key in graph.asset_check_keys}


def prepare_mlflow_store(uri: str) -> None:
    """Create the run's MLflow store before timing: a first run creates its tables (~3 s of
    migrations), every later run finds them."""
    from potato_assets.lib import tracking

    tracking.client_for(tracking.TrackingTarget(uri, None, None)).search_experiments()


def materialise_once(landing: Path, run_dir: Path) -> dict:
    """One `dagster asset materialize --select '*'` in a fresh process, DAGSTER_HOME, lake and
    MLflow store (created untimed); its wall time, own peak RSS, run duration and step times."""
    import dagster as dg

    lake, home = run_dir / "lake", run_dir / "home"
    shutil.rmtree(run_dir, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    mlflow_uri = f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}"
    prepare_mlflow_store(mlflow_uri)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "POTATO_LANDING_URI": str(landing),
        "POTATO_LAKE_URI": str(lake),
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "GX_ANALYTICS_ENABLED": "false",
        # A 1M-subject food-entry file is ~3 GB; ingest streams it, so the default 2 GiB cap
        # (a guard for a mistaken upload) is lifted for the bench.
        "POTATO_MAX_LANDING_BYTES": str(64 * 2**30),
    }
    log = run_dir / "materialize.log"
    t0 = time.perf_counter()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"],
            env=env,
            cwd=run_dir,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        with ProcTreeSampler(proc.pid, RSS_INTERVAL_S) as sampler:
            # wait4: this child's own resource usage (RUSAGE_CHILDREN would be the largest child so far)
            _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - t0
    tree = sampler.peak
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"materialisation in {run_dir} failed:\n{log.read_text()[-4000:]}")
    peak_kib = usage.ru_maxrss
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        run = instance.get_runs(limit=1)[0]
        run_stats = instance.get_run_stats(run.run_id)
        run_s = (run_stats.end_time or 0) - (run_stats.start_time or 0)
        checks = check_step_keys()
        layers: dict[str, float] = {"bronze": 0.0, "silver": 0.0, "gold": 0.0}
        silver_assets = 0.0
        steps = {}
        for stat in instance.get_run_step_stats(run.run_id):
            duration = (stat.end_time or 0) - (stat.start_time or 0)
            layers[layer_of(stat.step_key)] += duration
            if layer_of(stat.step_key) == "silver" and stat.step_key not in checks:
                silver_assets += duration
            steps[stat.step_key] = round(duration, 3)
    finally:
        instance.dispose()
    return {
        "wall_s": round(wall_s, 2),
        "run_s": round(run_s, 2),
        "silver_assets_s": round(silver_assets, 2),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        # user + system of the CLI process and the children it reaped: the work, on a shared machine
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "tree_peak_rss_mb": tree.total_mb,
        # the sampler can miss the root's own short peak; the kernel's ru_maxrss cannot
        "largest_process_rss_mb": max(tree.largest_process_mb, round(peak_kib / 1024, 1)),
        "max_processes": tree.max_processes,
        "layers_s": {k: round(v, 2) for k, v in layers.items()},
        "steps_s": steps,
    }


def generate_landing(n_subjects: int, weeks: int, landing: Path) -> dict:
    """The cohort's landing files, written by the streaming generator in its own process (timed
    and sampled apart from the run). A directory that already holds this cohort, recorded in its
    manifest by an earlier bench, is reused as is; its first generation's numbers are reported."""
    manifest = landing / "manifest.json"
    spec = {"subjects": n_subjects, "weeks": weeks, "generator": generator_fingerprint()}
    if manifest.exists():
        recorded = json.loads(manifest.read_text())
        files = recorded.get("files", {})
        if (
            recorded.get("spec") == spec
            and files
            and all(
                (landing / name).exists() and (landing / name).stat().st_size == size for name, size in files.items()
            )
        ):
            return {**recorded["generation"], "generate_reused": True}
    shutil.rmtree(landing, ignore_errors=True)
    cmd = [sys.executable, "-m", "potato_assets.lib.synthetic_landing", "--subjects", str(n_subjects)]
    cmd += ["--weeks", str(weeks), "--out", str(landing)]
    log = landing.parent / f"{landing.name}.log"
    landing.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        code, generate_s, cpu_s, peak = run_sampled(
            cmd, RSS_INTERVAL_S, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr
        )
    if code != 0:
        raise SystemExit(f"generating {n_subjects} subjects failed:\n{log.read_text()[-4000:]}")
    files = {f.name: f.stat().st_size for f in sorted(landing.glob("*.csv"))}
    generation = {
        "generate_s": round(generate_s, 2),
        "generate_cpu_s": round(cpu_s, 2),
        "generate_peak_rss_mb": peak.total_mb,
        "landing_mb": round(sum(files.values()) / 1e6, 1),
    }
    manifest.write_text(json.dumps({"spec": spec, "files": files, "generation": generation}, indent=2) + "\n")
    return {**generation, "generate_reused": False}


def generator_fingerprint() -> str:
    """The generator's source: kept landing files are reused only while it is unchanged."""
    import hashlib

    digest = hashlib.sha256()
    for rel in (
        "potato_assets/study/synthetic.py",
        "potato_assets/study/schema.py",
        "potato_assets/lib/synthetic_landing.py",
    ):
        digest.update((REPO / rel).read_bytes())
    return digest.hexdigest()[:16]


def modeling_table(lake: Path) -> pd.DataFrame | None:
    """The silver modelling table the run wrote (its committed dataset version), or None."""
    from potato_assets.lib.lake import datasets

    ref = datasets.current((lake / "silver" / "modeling_dataset").as_uri())
    return None if ref is None else ref.read()


def run_size(
    n_subjects: int,
    weeks: int,
    work: Path,
    repeats: int = 1,
    landing_root: Path | None = None,
    mixed_max_subjects: int = 50_000,
) -> dict:
    """Generate one cohort, materialise it ``repeats`` times; the median run (by run time) is
    reported, every run's wall time, run time and peak RSS are kept beside it."""
    landing = (landing_root or work) / f"landing-n{n_subjects}-w{weeks}"
    generation = generate_landing(n_subjects, weeks, landing)
    runs = [materialise_once(landing, work / f"run{i}") for i in range(repeats)]
    median = sorted(runs, key=lambda r: r["run_s"])[(len(runs) - 1) // 2]
    mixed: dict = {"mixed_model_s": None, "mixed_converged": None, "modeling_rows": None}
    table = modeling_table(work / "run0" / "lake")
    if n_subjects <= mixed_max_subjects and table is not None:
        mixed = time_mixed_model(table)
    for i in range(repeats):  # the lakes are several GB at the big sizes
        shutil.rmtree(work / f"run{i}" / "lake", ignore_errors=True)
    return {
        **median,
        "runs": [{k: r[k] for k in RUN_FIELDS} for r in runs],
        **mixed,
        "subjects": n_subjects,
        "weeks": weeks,
        **generation,
        "s_per_1000_subjects": round(median["run_s"] / (n_subjects / 1000), 3),
    }


def time_mixed_model(modeling: pd.DataFrame) -> dict:
    """The mixed model alone, on the modelling table the run wrote, in this warm process."""
    from potato_assets.defs.gold.assets import MODEL_LIBRARIES
    from potato_assets.lib.process import preload
    from potato_assets.study.fitting import fit_mixed_effects

    preload(*MODEL_LIBRARIES)  # loaded and frozen as the gold asset does
    fit_mixed_effects(modeling.head(2000))  # warm imports
    t0 = time.perf_counter()
    mixed = fit_mixed_effects(modeling)
    return {
        "mixed_model_s": round(time.perf_counter() - t0, 2),
        "mixed_converged": mixed.summary["converged"],
        "modeling_rows": len(modeling),
    }


def growth_lines(results: list[dict]) -> list[str]:
    """How run time and memory grow between consecutive sizes, per 1,000 subjects added, as a
    Markdown table; the slope from 100,000 to 1,000,000 subjects (issue 16's target) spelled out."""
    ordered = sorted(results, key=lambda r: r["subjects"])
    rows = []
    for small, big in zip(ordered, ordered[1:], strict=False):
        if big["subjects"] > small["subjects"]:
            rows.append(growth_row(small, big))
    if not rows:
        return []
    out = [
        "",
        "| from → to subjects | run s per 1,000 added | CLI process s per 1,000 added "
        "| peak tree RSS MB per 1,000 added |",
        "|---|---|---|---|",
        *rows,
    ]
    by_size = {r["subjects"]: r for r in ordered}
    if 100_000 in by_size and 1_000_000 in by_size:
        slope = per_thousand_added(by_size[100_000], by_size[1_000_000], "run_s")
        out += ["", f"Slope from 100,000 to 1,000,000 subjects: {slope:.3f} s of run time per 1,000 subjects."]
    return out


def per_thousand_added(small: dict, big: dict, key: str) -> float | None:
    if small.get(key) is None or big.get(key) is None:
        return None
    return (big[key] - small[key]) / ((big["subjects"] - small["subjects"]) / 1000)


def growth_row(small: dict, big: dict) -> str:
    def cell(key: str, digits: int) -> str:
        value = per_thousand_added(small, big, key)
        return "—" if value is None else f"{value:+.{digits}f}"

    return (
        f"| {small['subjects']:,} → {big['subjects']:,} | {cell('run_s', 3)} | {cell('wall_s', 3)} "
        f"| {cell('tree_peak_rss_mb', 1)} |"
    )


def size_row(r: dict) -> str:
    """One size's line of the main table."""

    def cell(value: object) -> str:
        return "—" if value is None else str(value)

    layers = r["layers_s"]
    generate = f"{r['generate_s']}{' (reused)' if r.get('generate_reused') else ''}"
    return (
        f"| {r['subjects']:,} × {r['weeks']} | {r['landing_mb']} | {generate} | {r['wall_s']} | {cell(r.get('cpu_s'))} "
        f"| {r['run_s']} "
        f"| {r['s_per_1000_subjects']} | {cell(r.get('tree_peak_rss_mb'))} | {cell(r.get('largest_process_rss_mb'))} "
        f"| {layers['bronze']} | {layers['silver']} | {r['silver_assets_s']} | {layers['gold']} "
        f"| {cell(r['steps_s'].get('fit_models'))} | {cell(r['mixed_model_s'])} |"
    )


TABLE_HEADER = [
    "| subjects × weeks | landing MB | generate s | CLI process s | CPU s | run s | run s per 1,000 subjects "
    "| peak tree RSS MB | largest process MB | bronze s | silver s | silver assets s | gold s "
    "| fit_models s | mixed model alone s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def parse_sizes(values: list[str]) -> list[int]:
    """``--sizes 1000,10000 100000``: commas or spaces, underscores allowed (1_000_000)."""
    sizes = [int(part.replace("_", "")) for value in values for part in value.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive subject counts, got {values}")
    return sizes


def time_validate(args: list[str], cwd: Path, repeats: int = 5) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [str(BIN / "dagster"), "definitions", "validate", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
            env=env,
        )
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 2)


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}"


def silver_engine() -> str:
    """POTATO_ENGINE as the runs see it (they inherit this environment): `POTATO_ENGINE=spark
    POTATO_SPARK_REMOTE=sc://… make bench` benches silver on that cluster."""
    from potato_assets.lib.engine.spark import without_parameters
    from potato_assets.settings import load_settings

    settings = load_settings()
    if settings.engine == "spark" and settings.spark_remote:
        return f"spark at {without_parameters(settings.spark_remote)}"
    return settings.engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1000,10000,50000"], help="subject counts, e.g. 1000,10000")
    parser.add_argument(
        "--landing-dir",
        type=Path,
        default=None,
        help="keep each size's landing files here and reuse them on the next bench (default: a temp dir)",
    )
    parser.add_argument(
        "--mixed-model-max-subjects",
        type=int,
        default=50_000,
        help="time the mixed model alone only up to this size (it loads the modelling table here)",
    )
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument("--validate-repeats", type=int, default=5, help="definitions-validate timings (median)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="materialisations per size; the table shows the median run"
    )
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="potato-bench-") as tmp:
        work = Path(tmp)
        (work / "one_asset.py").write_text(ONE_ASSET)
        for rel, text in ONE_ASSET_PROJECT.items():
            (work / "one" / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / "one" / rel).write_text(text)
        home = work / "validate_home"
        home.mkdir()
        os.environ["DAGSTER_HOME"] = str(home)
        validate_project = time_validate(["-m", "potato_assets.definitions"], REPO, args.validate_repeats)
        validate_one_project = time_validate(["-m", "one_project.definitions"], work / "one", args.validate_repeats)
        validate_one = time_validate(["-f", "one_asset.py"], work, args.validate_repeats)
        for size in sizes:
            print(f"materialising {size} subjects × {args.weeks} weeks …", flush=True)
            results.append(
                run_size(
                    size, args.weeks, work / f"n{size}", args.repeats, args.landing_dir, args.mixed_model_max_subjects
                )
            )
    report = {
        "machine": machine(),
        "silver_engine": silver_engine(),
        "definitions_validate_s": {
            "potato_assets": validate_project,
            "one_asset_dg_project": validate_one_project,
            "one_asset_file": validate_one,
        },
        "sizes": results,
    }
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Machine: {report['machine']}",
        f"Silver engine: {report['silver_engine']}",
        "",
        *TABLE_HEADER,
        *(size_row(r) for r in results),
    ]
    lines += [
        "",
        "CLI process: wall time of `dagster asset materialize --select '*'` in a fresh process, "
        "start-up and interpreter exit included. Run: Dagster's run duration (start to success) for "
        "every asset and check. Layer times are Dagster step durations, asset checks counted with "
        "their asset's layer; silver assets: the four silver steps without their contract checks. "
        "The MLflow store exists before the run (created untimed, as after a first run). "
        "CPU: user + system seconds of the CLI process and the children it reaped (on a shared machine "
        "the wall times stretch with the load, this much less). "
        "Generate: the streaming generator writing the landing CSVs, in its own process, not part of the run. "
        f"Peak tree RSS: the largest sum of the resident sets of the materialising process and all its "
        f"descendants, sampled from /proc every {RSS_INTERVAL_S} s (shared pages count in each process); "
        "largest process: the largest single resident set (the CLI process's own from the kernel).",
        f"`dagster definitions validate` (median of {args.validate_repeats}): potato_assets {validate_project} s; "
        f"a one-asset project loaded the same way (load_from_defs_folder) {validate_one_project} s "
        f"(difference {validate_project - validate_one_project:+.2f} s); a one-asset file with a "
        f"plain Definitions {validate_one} s "
        f"(difference {validate_project - validate_one:+.2f} s).",
    ]
    if args.repeats > 1:
        lines += [
            "",
            f"Each size materialised {args.repeats} times; the table shows the median run by run time. All runs:",
        ]
        lines += [
            f"- {r['subjects']:,}: CLI process "
            + ", ".join(str(x["wall_s"]) for x in r["runs"])
            + " s; run "
            + ", ".join(str(x["run_s"]) for x in r["runs"])
            + " s; peak tree RSS "
            + ", ".join(str(x["tree_peak_rss_mb"]) for x in r["runs"])
            + " MB"
            for r in results
        ]
    lines += growth_lines(results)
    table = "\n".join(lines)
    (args.out / "bench.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
