"""Landing reads (issue 15): literal locations, regular files inside the zone only, a size limit,
nothing of a refused file's content in any message; and inert Markdown for untrusted cells."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid

import dagster as dg
import pytest

from potato_assets.defs.resources import LandingZone, build_resources
from potato_assets.lib import markdown
from potato_assets.lib.lake import landing, storage
from potato_assets.settings import DEFAULT_MAX_LANDING_BYTES, load_settings, normalize_uri
from potato_assets.study.schema import LANDING_FILES, WEIGHT

ODD_NAMES = ["path with space", "hash#part", "pct%20x", "naïve-é", "q?x=1"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_local_location_means_exactly_the_path_given(tmp_path, name):
    folder = tmp_path / name
    uri = normalize_uri(str(folder))
    assert uri == "file://" + str(folder)
    assert normalize_uri("file://" + str(folder)) == uri
    storage.write_bytes_atomic(storage.to_upath(storage.join(uri, "bronze", "t.parquet")), b"x")
    assert (folder / "bronze" / "t.parquet").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no percent-encoded sibling


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_landing_zone_with_an_odd_name_is_read(tmp_path, sample_dir, name):
    zone = tmp_path / name
    zone.mkdir()
    shutil.copy(sample_dir / WEIGHT.file_name, zone / WEIGHT.file_name)
    settings = load_settings({"POTATO_LANDING_URI": str(zone), "POTATO_LAKE_URI": str(tmp_path / "lake")})
    reader = build_resources(settings)["landing"]
    assert reader.read_bytes(WEIGHT.file_name) == (sample_dir / WEIGHT.file_name).read_bytes()
    observed, _ = landing.observe(settings.landing_uri, [WEIGHT.file_name], landing.LandingCursor())
    assert list(observed) == [WEIGHT.file_name]


def test_an_s3_location_keeps_its_key_literal(moto_s3):
    bucket = f"odd-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    prefix = "in box/#1 %20 é"
    moto_s3.put_object(Bucket=bucket, Key=f"{prefix}/{WEIGHT.file_name}", Body=b"a,b\n")
    uri = normalize_uri(f"s3://{bucket}/{prefix}/")
    assert uri == f"s3://{bucket}/{prefix}"
    assert LandingZone(landing_uri=uri).read_bytes(WEIGHT.file_name) == b"a,b\n"
    storage.write_bytes_atomic(storage.to_upath(storage.join(f"s3://{bucket}/lake #2", "t.parquet")), b"x")
    keys = sorted(o["Key"] for o in moto_s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"{prefix}/{WEIGHT.file_name}", "lake #2/t.parquet"]
    with pytest.raises(dg.Failure, match="larger than the 3-byte limit"):
        LandingZone(landing_uri=uri, max_bytes=3).read_bytes(WEIGHT.file_name)


@pytest.fixture
def zone(tmp_path, sample_dir):
    folder = tmp_path / "zone"
    folder.mkdir()
    for spec in LANDING_FILES:
        shutil.copy(sample_dir / spec.file_name, folder / spec.file_name)
    return folder


def refuse(zone, name: str, **kwargs) -> str:
    reader = LandingZone(landing_uri=normalize_uri(str(zone)), **kwargs)
    result: dict[str, BaseException] = {}

    def read() -> None:
        try:
            reader.read_bytes(name)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["exc"] = exc

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"reading {name} hung"
    exc = result.get("exc")
    assert isinstance(exc, dg.Failure), exc
    return str(exc.description)


def test_a_fifo_is_refused_without_blocking(zone):
    os.unlink(zone / WEIGHT.file_name)
    os.mkfifo(zone / WEIGHT.file_name)
    assert refuse(zone, WEIGHT.file_name) == (
        "Potato_tidy.csv in the landing zone is a named pipe (FIFO), not a regular file; it was not read."
    )


def test_a_directory_is_refused_in_one_sentence(zone):
    os.unlink(zone / WEIGHT.file_name)
    (zone / WEIGHT.file_name).mkdir()
    assert refuse(zone, WEIGHT.file_name) == (
        "Potato_tidy.csv in the landing zone is a directory, not a regular file; it was not read."
    )


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd", "outside.csv"])
def test_a_link_out_of_the_zone_is_refused_and_nothing_of_it_echoed(zone, target):
    if target == "outside.csv":
        outside = zone.parent / "outside.csv"
        shutil.copy(zone / WEIGHT.file_name, outside)
        target = str(outside)
    os.unlink(zone / WEIGHT.file_name)
    os.symlink(target, zone / WEIGHT.file_name)
    message = refuse(zone, WEIGHT.file_name)
    assert message == "Potato_tidy.csv is a symbolic link that resolves outside the landing zone; it was not read."
    decision = landing.scan(normalize_uri(str(zone)), [s.file_name for s in LANDING_FILES], landing.LandingCursor())
    assert not decision.request and message.rstrip(".") in decision.reason()
    assert "root:" not in decision.reason()


def test_a_link_inside_the_zone_is_followed(zone):
    os.rename(zone / WEIGHT.file_name, zone / "export.txt")
    os.symlink("export.txt", zone / WEIGHT.file_name)
    reader = LandingZone(landing_uri=normalize_uri(str(zone)))
    assert reader.read_bytes(WEIGHT.file_name) == (zone / "export.txt").read_bytes()


def test_the_size_limit_is_a_setting_and_refuses_before_reading(zone, tmp_path):
    size = (zone / WEIGHT.file_name).stat().st_size
    settings = load_settings({"POTATO_LANDING_URI": str(zone), "POTATO_MAX_LANDING_BYTES": str(size - 1)})
    assert settings.max_landing_bytes == size - 1
    assert load_settings({}).max_landing_bytes == DEFAULT_MAX_LANDING_BYTES == 2 * 1024**3
    message = refuse(zone, WEIGHT.file_name, max_bytes=settings.max_landing_bytes)
    assert message == (
        f"Potato_tidy.csv is larger than the {size - 1:,}-byte limit for a landing file ({size:,} bytes; "
        "POTATO_MAX_LANDING_BYTES); it was not read."
    )
    assert build_resources(settings)["landing"].max_bytes == size - 1
    with pytest.raises(ValueError, match="POTATO_MAX_LANDING_BYTES"):
        load_settings({"POTATO_MAX_LANDING_BYTES": "lots"})


def test_the_bounded_reader_stops_at_the_limit_when_a_file_grows(zone):
    # Checked small when opened, then the file grew: the reader counts what it reads.
    size = (zone / WEIGHT.file_name).stat().st_size
    chunks = landing.landing_chunks(normalize_uri(str(zone)), WEIGHT.file_name, max_bytes=size + 10)
    assert len(next(chunks)) == size
    with open(zone / WEIGHT.file_name, "ab") as fh:
        fh.write(b"1,2024-01-01,1,80,5,5\n" * 100_000)
    with pytest.raises(landing.LandingRefused, match=f"more than {size + 10:,}"):
        list(chunks)


MALICIOUS = [
    "[click me](https://evil.example) | **x**",
    "<img src=x onerror=alert(1)>",
    "![i](http://evil.example/p.png)",
    "`code` _em_ ~~s~~ # h",
    "line\nbreak\r| a | b |",
    "https://evil.example www.evil.example",
]


def test_markdown_cells_render_as_their_own_text():
    import pandas as pd
    from markdown_it import MarkdownIt

    frame = pd.DataFrame({"value": MALICIOUS, "reason": ["r"] * len(MALICIOUS)})
    html = MarkdownIt("commonmark").enable("table").render(markdown.table(frame))
    assert "<a " not in html and "<img" not in html and "<strong" not in html and "<code" not in html
    assert "<em" not in html and "<h1" not in html
    assert html.count("<td>") == 2 * len(MALICIOUS)  # a pipe adds no cell


def test_markdown_cells_and_tables_are_cut():
    import pandas as pd

    frame = pd.DataFrame({"value": ["x" * 120_000] * 25})
    text = markdown.table(frame)
    body = [ln for ln in text.splitlines() if ln.startswith("| x")]
    assert len(body) == markdown.TABLE_ROWS
    assert all(len(ln) <= markdown.CELL_CHARS + 10 for ln in body)
    assert "(10 of 25 shown)" in text


def test_the_sensor_names_a_fifo_study_file_instead_of_waiting_for_it(zone):
    os.unlink(zone / WEIGHT.file_name)
    os.mkfifo(zone / WEIGHT.file_name)
    names = [s.file_name for s in LANDING_FILES]
    decision = landing.scan(normalize_uri(str(zone)), names, landing.LandingCursor())
    assert not decision.request
    reason = decision.reason()
    assert "Potato_tidy.csv in the landing zone is a named pipe (FIFO), not a regular file" in reason
    assert "waiting for Potato_tidy.csv" not in reason


def test_the_digest_streams_the_file_with_the_same_refusals(tmp_path, sample_dir):
    """observe_landing hashes through chunks: the same sha256 and size as the whole file, and a
    file over the limit refused with the same sentence, without holding it in memory."""
    shutil.copy(sample_dir / WEIGHT.file_name, tmp_path / WEIGHT.file_name)
    raw = (sample_dir / WEIGHT.file_name).read_bytes()
    zone = LandingZone(landing_uri=str(tmp_path))
    assert zone.digest(WEIGHT.file_name) == (hashlib.sha256(raw).hexdigest(), len(raw))
    with pytest.raises(dg.Failure, match="larger than the 3-byte limit"):
        LandingZone(landing_uri=str(tmp_path), max_bytes=3).digest(WEIGHT.file_name)
    with pytest.raises(dg.Failure, match="was not found in the landing zone"):
        zone.digest("Potato_missing.csv")
