"""Input hardening end to end (issue 15), on copies of the sample study.

One run carries every row-level class at once, in a landing zone and a lake whose names hold a
space, '#', '%' and non-ASCII: it must succeed, write exactly there, and quarantine each bad row by
name (blank categories, a mistyped weigh-in date, Markdown in a cell, a stray cp1252 byte). Its lake
is then the last good lake that each file-level refusal (FIFO, links out of the zone, a directory,
a size limit, reserved or unnamed columns) must leave byte for byte, with one plain sentence and
nothing of a refused file's content in any event.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.defs.resources import LandingZone
from potato_assets.lib import markdown
from potato_assets.settings import normalize_uri
from potato_assets.study.schema import FIBER, NUTRITION, WEIGHT
from potato_assets_tests.helpers import (
    REPO,
    check_evaluations,
    cli_env,
    cli_home,
    copy_landing,
    lake_bytes,
    materialize_all,
    read_table,
    run_cli,
    set_field,
)

pytestmark = pytest.mark.e2e
ODD = "in box #1 %20 é"
INJECTION = "[click me](https://evil.example) | **x** <b>y</b>"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def spoiled(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening") / ODD
    landing = copy_landing(sample_dir, root / f"landing {ODD}")
    weight, nutrition = landing / WEIGHT.file_name, landing / NUTRITION.file_name
    facts: dict[str, object] = {}

    # (4) blank, NA and none categories on three beans entries.
    lines = _lines(nutrition)
    beans = [i + 1 for i, ln in enumerate(lines) if ",beans," in ln][:3]
    for line, token in zip(beans, ["", "NA", "none"], strict=True):
        set_field(nutrition, line, "category", token)
    facts["null_category_lines"] = beans
    # (7) Markdown in a category, and a 120 kB food name on a row quarantined for its category.
    set_field(nutrition, 40, "category", INJECTION, raw=True)
    set_field(nutrition, 41, "food_item", "A" * 120_000)
    set_field(nutrition, 41, "category", "candy")
    # (11) one stray Windows-1252 byte in an otherwise UTF-8 file with accented names.
    for line in range(60, 400, 7):
        set_field(nutrition, line, "food_item", "crème fraîche")
    accented = "crème fraîche".encode()
    raw = nutrition.read_bytes().replace(accented, accented.replace("è".encode(), b"\xe8"), 1)
    facts["stray_byte_line"] = 60
    nutrition.write_bytes(raw)
    # (6) one weigh-in date typo on line 2: a year off.
    date = _lines(weight)[1].split(",")[1]
    typo = str(int(date[:4]) - 1) + date[4:]
    set_field(weight, 2, "date", typo)
    facts["typo"] = typo

    lake = root / f"lake {ODD}"
    result = materialize_all(landing, lake, raise_on_error=False)
    return root, landing, lake, result, facts


def test_odd_location_names_are_used_exactly(spoiled):
    root, landing, lake, result, _ = spoiled
    assert result.success
    assert sorted(p.name for p in root.iterdir()) == sorted([landing.name, lake.name])
    assert (lake / "bronze" / "weight" / "_current.json").is_file() and (lake / "gold" / "models").is_dir()
    assert list(root.parent.iterdir()) == [root]  # no percent-encoded sibling such as 'in%20box'
    assert not any("%20box" in str(p) or "%C3" in str(p) for p in root.rglob("*"))


def quarantine_of(lake: Path):
    return read_table(str(lake), "bronze/quarantine")


def test_null_categories_are_quarantined_not_turned_into_no_beans(spoiled):
    _, _, lake, result, facts = spoiled
    q = quarantine_of(lake)
    mine = q[(q["source_file"] == NUTRITION.file_name) & q["line"].isin(facts["null_category_lines"])]
    assert mine["reason"].tolist() == ["missing value in a required column"] * 3
    assert mine["value"].tolist() == ["", "NA", "none"]
    bronze = read_table(str(lake), "bronze/nutrition")
    assert bronze["category"].notna().all()
    assert check_evaluations(result)["bronze/nutrition:contract"].passed


def test_the_mistyped_date_is_the_one_row_blamed_and_the_run_goes_on(spoiled):
    _, _, lake, result, facts = spoiled
    q = quarantine_of(lake)
    mine = q[q["source_file"] == WEIGHT.file_name]
    assert mine[["line", "column"]].values.tolist() == [[2, "date,week"]]
    assert f"so {facts['typo']} is week" in mine["reason"].iloc[0]
    assert 2 not in read_table(str(lake), "bronze/weight")["source_line"].tolist()
    assert read_table(str(lake), "silver/study_calendar")["subject_id"].nunique() > 1
    assert check_evaluations(result)["bronze/weight:quarantine_share"].passed


def test_quarantine_examples_are_inert_markdown(spoiled):
    from markdown_it import MarkdownIt

    _, _, _, result, _ = spoiled
    evaluation = check_evaluations(result)["bronze/nutrition:quarantine_share"]
    text = evaluation.metadata["quarantine_examples"].value
    assert len(text) < 20_000  # ten rows of at most 80 characters a cell
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<a " not in html and "<strong" not in html and "<b>" not in html
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert all(ln.count(" | ") == 4 for ln in rows)  # five cells, whatever a cell holds
    assert markdown.cell(INJECTION) in text


def test_a_stray_byte_keeps_utf8_and_is_reported_by_line_and_column(spoiled):
    _, _, lake, result, facts = spoiled
    bronze = read_table(str(lake), "bronze/nutrition")
    assert (bronze["food_item"] == "crème fraîche").sum() >= 45
    assert not bronze["food_item"].str.contains("Ã").any()
    q = quarantine_of(lake)
    bad = q[(q["source_file"] == NUTRITION.file_name) & q["reason"].str.startswith("not valid UTF-8")]
    assert bad[["line", "column"]].values.tolist() == [[facts["stray_byte_line"], "food_item"]]
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["bronze", "nutrition"])
    )
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["encoding"].value == "utf-8"
    assert "1 byte sequence(s) are not valid UTF-8" in metadata["ingest_notes"].value[0]


# --- file-level refusals: one sentence, nothing written, nothing of the file echoed ------------


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _link_to(target: str):
    def spoil(path: Path) -> None:
        path.unlink()
        os.symlink(target, path)

    return spoil


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x.csv").write_text("a\n")


def _reserved(path: Path) -> None:
    lines = _lines(path)
    path.write_text("\n".join([lines[0] + ",source_line", *(ln + ",7" for ln in lines[1:])]) + "\n")


def _trailing_commas(path: Path) -> None:
    path.write_text("\n".join(ln + ",," for ln in _lines(path)) + "\n")


def _zero_width_in_wrong_name(path: Path) -> None:
    lines = _lines(path)
    lines[0] = lines[0].replace("subject_id", "subject\u200b\u00a0id")
    path.write_text("\n".join(lines) + "\n")


REFUSALS = {
    "fifo": (WEIGHT, _fifo, "Potato_tidy.csv in the landing zone is a named pipe (FIFO), not a regular file"),
    "link to /etc/passwd": (
        WEIGHT,
        _link_to("/etc/passwd"),
        "Potato_tidy.csv is a symbolic link that resolves outside",
    ),
    "link to /dev/zero": (FIBER, _link_to("/dev/zero"), "Potato_fiber_daily.csv is a symbolic link that resolves"),
    "directory": (NUTRITION, _directory, "Potato_nutrition_rows.csv in the landing zone is a directory"),
    "too large": (NUTRITION, None, "Potato_nutrition_rows.csv is larger than the 50,000-byte limit"),
    "reserved column": (WEIGHT, _reserved, "Potato_tidy.csv line 1 names column 7 (source_line), reserved"),
    "trailing commas": (FIBER, _trailing_commas, "Potato_fiber_daily.csv line 1 has no name for column(s) 6, 7"),
    # The zero-width space is removed; the no-break space is a real difference, spelled out.
    "invisible in a name": (WEIGHT, _zero_width_in_wrong_name, "found: subject<U+00A0>id, date"),
}


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refused_file_leaves_the_lake_byte_for_byte_in_one_sentence(spoiled, tmp_path, refusal):
    spec, spoil, words = REFUSALS[refusal]
    _, good_landing, good_lake, good, _ = spoiled
    assert good.success
    lake = tmp_path / "lake"
    shutil.copytree(good_lake, lake)
    before = lake_bytes(lake)
    landing = tmp_path / "landing"
    shutil.copytree(good_landing, landing)
    overrides = None
    if spoil is None:
        overrides = {"landing": LandingZone(landing_uri=normalize_uri(str(landing)), max_bytes=50_000)}
    else:
        spoil(landing / spec.file_name)

    result = materialize_all(landing, lake, raise_on_error=False, resources=overrides)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["ingest_landing"]
    description = failures[0].step_failure_data.user_failure_data.description
    assert words in description, description
    assert "Traceback" not in description and "\n" not in description and description.count(". ") == 0
    assert not result.get_asset_materialization_events()
    assert lake_bytes(lake) == before
    echoed = " ".join(str(e.message or "") for e in result.all_events)
    assert "root:" not in echoed and "\x00" not in echoed


def test_the_cli_refuses_a_fifo_and_an_oversized_file_without_hanging(sample_dir, tmp_path):
    # The CLI runs the same ingest step: a FIFO used to block it forever.
    landing = copy_landing(sample_dir, tmp_path / "landing")
    _fifo(landing / WEIGHT.file_name)
    home = cli_home(tmp_path)
    lake = tmp_path / "lake"
    done = run_cli(cli_env(home, landing, lake), REPO, timeout=300)
    assert done.returncode != 0
    assert "Potato_tidy.csv in the landing zone is a named pipe (FIFO), not a regular file" in done.stdout + done.stderr
    assert not lake.exists() or not any(p.is_file() for p in lake.rglob("*"))

    (landing / WEIGHT.file_name).unlink()
    shutil.copy(sample_dir / WEIGHT.file_name, landing / WEIGHT.file_name)
    env = cli_env(home, landing, lake, POTATO_MAX_LANDING_BYTES="10000")
    done = run_cli(env, REPO, timeout=300)
    assert done.returncode != 0
    assert "is larger than the 10,000-byte limit for a landing file" in done.stdout + done.stderr
