"""The web UI, driven like a person would: `dagster dev` on loopback, Debian's headless Chromium
over the DevTools protocol. "Materialize all" clicked on the asset graph, the run succeeds; the
report's Markdown view shows every figure.

Screenshots go to the test's temporary folder; with POTATO_UPDATE_SCREENSHOTS=1 also to
docs/images/ (the pictures README and docs/ show).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from potato_assets_tests.helpers import REPO, cli_env, cli_home, free_port, graphql, run_cli

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = REPO / "docs" / "images"
UPDATE_SCREENSHOTS = os.environ.get("POTATO_UPDATE_SCREENSHOTS") == "1"
VIEWPORT = (1600, 1000)
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the process group (the process and everything it started), bounded in time."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Whatever the leader left behind in its group (Chromium's helpers, run workers).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Webserver:
    def __init__(self, port: int, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = f"http://127.0.0.1:{port}", proc, log

    def graphql(self, query: str) -> dict:
        return graphql(self.url, query, timeout=10)

    def location_loaded(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dagster dev exited:\n{self.log.read_text()[-3000:]}")
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "locationOrLoadError { __typename } } } } }"
            )
        except OSError:
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        return any((e.get("locationOrLoadError") or {}).get("__typename") == "RepositoryLocation" for e in entries)

    def runs(self) -> list[dict]:
        data = self.graphql("{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }")
        return data["runsOrError"]["results"]


class Page:
    """One Chromium tab over the DevTools protocol (websocket, JSON commands)."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.call("Page.enable")
        width, height = VIEWPORT
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1.5,
            mobile=False,
        )

    def call(self, method: str, **params):
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def center_of(self, finder: str):
        """Centre of the element `finder` (a JS expression) in viewport pixels, or None."""
        return self.js(
            f"(() => {{ const e = {finder}; if (!e) return null;"
            " e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); if (!r.width) return null;"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )

    def click(self, finder: str, what: str, timeout: float = 30) -> None:
        """A real mouse click (move, press, release) on the element, once it is on screen."""
        x, y = until(lambda: self.center_of(finder), timeout, what)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def screenshot(self, clip: dict | None = None) -> bytes:
        params: dict = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])


def button(text: str) -> str:
    return f"[...document.querySelectorAll('button')].find(b => b.innerText.trim().startsWith({json.dumps(text)}))"


def menu_item(text: str) -> str:
    return (
        "[...document.querySelectorAll('[role=menuitem], [role=menu] a, [role=menu] button, li')]"
        f".find(e => e.innerText && e.innerText.trim().startsWith({json.dumps(text)}))"
    )


# The graph's settings button sits in the graph's bottom-right toolbar.
GRAPH_SETTINGS = (
    "[...document.querySelectorAll('button')].filter(b => b.querySelector('[aria-label=settings]'))"
    ".sort((a, b) => b.getBoundingClientRect().x - a.getBoundingClientRect().x)[0]"
)


def ui_env(tmp_path: Path, sample_dir: Path, home: Path) -> dict[str, str]:
    return cli_env(
        home,
        sample_dir,
        tmp_path / "lake",
        # Only the test launches runs here: the landing sensor looks once, the schedule never.
        POTATO_LANDING_POLL_SECONDS="3600",
        POTATO_SCHEDULE_CRON="0 0 29 2 *",
        GX_ANALYTICS_ENABLED="false",
    )


@contextlib.contextmanager
def running_webserver(tmp_path: Path, env: dict[str, str]):
    """`dagster dev` on a free loopback port until its code location has loaded; stopped after."""
    port = free_port()
    log = tmp_path / "dagster-dev.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(REPO / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = Webserver(port, proc, log)
    try:
        until(server.location_loaded, 150, "dagster dev to load the code location", interval=1)
        yield server
    finally:
        stop(proc, signal.SIGINT)  # dagster dev shuts its children down on Ctrl-C


@pytest.fixture
def webserver(tmp_path, sample_dir):
    home = cli_home(tmp_path)
    with running_webserver(tmp_path, ui_env(tmp_path, sample_dir, home)) as server:
        yield server


def save_screenshot(png: bytes, tmp_path: Path, name: str) -> None:
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    (tmp_path / name).write_bytes(png)
    if UPDATE_SCREENSHOTS:
        IMAGES.mkdir(parents=True, exist_ok=True)
        (IMAGES / name).write_bytes(png)


def skip_community_dialog(page: Page) -> None:
    """A fresh instance greets a first visitor with the community dialog: skip it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not page.center_of(button("Skip")):
        time.sleep(0.5)
    if page.center_of(button("Skip")):
        page.click(button("Skip"), "the dialog's Skip button")
        until(
            lambda: page.js("document.querySelectorAll('[role=dialog]').length") == 0,
            10,
            "the dialog to close",
        )


@pytest.fixture
def page(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip(
        "websockets.sync.client",
        reason="the websockets package drives Chromium's DevTools protocol",
    )
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--remote-debugging-address=127.0.0.1",
         f"--remote-debugging-port={port}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        from websockets.sync.client import connect

        def page_target():
            try:
                url = f"http://127.0.0.1:{port}/json/list"
                with urllib.request.urlopen(url, timeout=1) as r:
                    return next((t for t in json.load(r) if t["type"] == "page"), None)
            except OSError:
                return None

        target = until(page_target, 30, "Chromium's DevTools endpoint")
        url = target["webSocketDebuggerUrl"]
        with connect(url, max_size=64 * 2**20, open_timeout=10) as ws:
            yield Page(ws)
    finally:
        stop(proc)


def test_materialize_all_from_the_asset_graph(page, webserver, tmp_path):
    page.goto(f"{webserver.url}/asset-groups")
    until(lambda: page.center_of(button("Materialize all")), 90, "the asset graph")

    skip_community_dialog(page)

    # Every group open, top to bottom: the whole graph in one picture.
    page.click(GRAPH_SETTINGS, "the graph settings button")
    page.click(menu_item("Expand all groups"), "'Expand all groups'")
    page.click(GRAPH_SETTINGS, "the graph settings button")
    if page.center_of(menu_item("Change graph to vertical")):
        page.click(menu_item("Change graph to vertical"), "'Change graph to vertical orientation'")
    else:
        page.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")

    assert webserver.runs() == []
    page.click(button("Materialize all"), "the Materialize all button")
    launched = until(webserver.runs, 60, "a run launched from the UI")
    assert len(launched) == 1
    run_id = launched[0]["runId"]

    def finished_status():
        status = next(r["status"] for r in webserver.runs() if r["runId"] == run_id)
        return status if status in FINISHED else None

    status = until(finished_status, 300, "the run to finish", interval=2)
    assert status == "SUCCESS", webserver.log.read_text()[-3000:]
    assert (tmp_path / "lake" / "gold" / "reports" / "model_report.html").stat().st_size > 0

    # The UI says so too.
    page.goto(f"{webserver.url}/runs/{run_id}")
    until(lambda: page.js("document.body.innerText.includes('Success')"), 60, "the run page")

    # The graph again, laid out afresh, every asset now materialised.
    page.goto(f"{webserver.url}/asset-groups")
    until(lambda: page.center_of(button("Materialize all")), 60, "the asset graph after reload")
    until(
        lambda: page.js("document.body.innerText.includes('model_report')"),
        30,
        "the expanded gold group",
    )
    time.sleep(3)  # let the layout settle and the status colours arrive
    graph = page.js(
        "(() => { const r = [...document.querySelectorAll('svg')]"
        ".map(s => s.getBoundingClientRect())"
        ".sort((a, b) => b.width * b.height - a.width * a.height)[0];"
        " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
    )
    save_screenshot(page.screenshot(clip=graph), tmp_path, "asset-graph.png")


# The report's Markdown dialog (not the community dialog a fresh instance may still show).
DIALOG = "[...document.querySelectorAll('[role=dialog]')].find(d => d.innerText.includes('Provenance'))"
# The visible part of the dialog, in viewport pixels.
DIALOG_CLIP = (
    f"(() => {{ const r = ({DIALOG}).getBoundingClientRect(); const top = Math.max(0, r.y);"
    " const bottom = Math.min(window.innerHeight, r.bottom);"
    " return {x: r.x, y: top, width: r.width, height: bottom - top}; })()"
)


def test_the_report_markdown_view_shows_every_figure(page, tmp_path, sample_dir):
    """The report asset's "Show Markdown" renders the report with its figures inline (data URIs):
    every image there has loaded (naturalWidth > 0), one per figure of the report on disk."""
    home = cli_home(tmp_path)
    env = ui_env(tmp_path, sample_dir, home)
    done = run_cli(env, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    on_disk = (tmp_path / "lake" / "gold" / "reports" / "model_report.md").read_text()
    figures_on_disk = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", on_disk)
    assert figures_on_disk == ["../figures/fiber_vs_weight_change.png", "../figures/subject_trajectories.png"]

    with running_webserver(tmp_path, env) as server:
        page.goto(f"{server.url}/assets/gold/reports/model_report")
        show_report = (
            "[...document.querySelectorAll('tr')]"
            ".find(r => r.cells.length && r.cells[0].innerText.trim() === 'report')"
            "?.querySelector('a, button')"
        )
        until(lambda: page.center_of(show_report), 120, "the report asset's metadata")
        skip_community_dialog(page)
        page.click(show_report, "the report entry's [Show Markdown]")
        until(lambda: page.js(f"!!({DIALOG})"), 30, "the report dialog")
        images = (
            f"[...({DIALOG}).querySelectorAll('img')]"
            ".map(i => ({complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 22)}))"
        )
        loaded = until(
            lambda: (found := page.js(images)) and all(i["complete"] for i in found) and found,
            30,
            "the report's images to load",
        )
        assert len(loaded) == len(figures_on_disk), loaded
        assert all(i["width"] > 0 for i in loaded), loaded
        assert {i["src"] for i in loaded} == {"data:image/png;base64,"}

        # The pictures README shows: the report's opening, then its figures.
        page.js(f"({DIALOG}).querySelector('h1, h2')?.scrollIntoView({{block: 'start'}})")
        time.sleep(1)
        save_screenshot(page.screenshot(clip=page.js(DIALOG_CLIP)), tmp_path, "report-markdown.png")
        page.js(
            f"[...({DIALOG}).querySelectorAll('h2')].find(h => h.innerText.trim() === 'Figures')"
            ".scrollIntoView({block: 'start'})"
        )
        time.sleep(1)
        save_screenshot(page.screenshot(clip=page.js(DIALOG_CLIP)), tmp_path, "report-figures.png")
