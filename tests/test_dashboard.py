"""The testbed's dashboard, as a person would look at it (issue 26): a real Mosquitto, the
coordinator with `--dashboard` and three device processes, the page open in headless
Chromium (Debian's, driven by Playwright). The device table fills, a round's accuracy shows
within 2 s of the round closing, a killed device turns offline, hostile text shows as text,
and the report of the finished run opens without a server and shows the numbers of
report.json. Screenshots go to the test's folder (and DASHBOARD_SCREENSHOTS=dir keeps them)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from coordinator.dashboard import RunView, render_report, view_from_run_dir
from fedlink.protocol import Topics, to_json
from tests.fl_testkit import (
    ROOT,
    Watcher,
    ghost,
    kill_all,
    python_env,
    read_jsonl,
    settings,
    spawn_client,
    wait_for,
    write_config,
    write_dataset,
)
from tests.mosquitto_broker import Mosquitto, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = "<script>window.__pwned=1</script>"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (apt-get install chromium, or make setup as root)")
    return playwright.sync_playwright()


def _shoot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("DASHBOARD_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, name))


def test_the_live_dashboard_and_the_report_of_a_real_run(tmp_path):
    # Prepare
    data = write_dataset(str(tmp_path / "data"))
    # A ghost (client-003) is selected every round and never answers: each round lasts its 3 s
    # deadline, long enough to watch, and its row shows a missed deadline.
    table = settings(data, run_id="dash", rounds=4, deadline_s=3.0, min_updates=2, broadcast="weights",
                     coordinator={"expected_clients": 4})
    config = write_config(str(tmp_path), table)
    run_dir = str(tmp_path / "run")
    port = free_port()
    topics = Topics("dash")
    with _browser() as playwright, Mosquitto(str(tmp_path)) as broker:
        log = open(tmp_path / "coordinator.log", "wb")
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "--broker", broker.url, "--config", config, "--run-dir", run_dir,
             "--quiet", "--dashboard", f"127.0.0.1:{port}"], cwd=ROOT, env=python_env(), stdout=log,
            stderr=subprocess.STDOUT)
        clients = [spawn_client(broker.url, config, f"client-00{i}", str(tmp_path / f"client-{i}.log"))
                   for i in range(3)]
        watcher = Watcher(broker.url, topics.base + "/#")
        ghost(watcher, topics, "client-003")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            # bypass_csp: the test evaluates its own checks; escaping must hold without the CSP too
            page = browser.new_page(viewport={"width": 1500, "height": 1000}, bypass_csp=True)
            wait_for(lambda: b"dashboard: http" in open(tmp_path / "coordinator.log", "rb").read(), 20,
                     "the dashboard's URL")
            page.goto(f"http://127.0.0.1:{port}/")
            # Execute and assert, as the run goes
            page.wait_for_function("document.querySelectorAll('#devices td.online').length === 4", timeout=20000)
            wait_for(lambda: read_jsonl(os.path.join(run_dir, "rounds.jsonl")), 30, "round 1")
            closed = read_jsonl(os.path.join(run_dir, "rounds.jsonl"))[0]["time"]
            page.wait_for_function("(document.querySelector('#rounds tr[data-round=\"1\"] td.accuracy') || {})"
                                   ".textContent", timeout=5000)
            shown = time.time()
            assert page.get_attribute("#devices tr[data-client=\"client-003\"]", "class") == "missed"
            assert shown - closed <= 2.0, f"round 1's accuracy showed {shown - closed:.2f} s after the round closed"
            print(f"dashboard: round 1's accuracy on the page {shown - closed:.2f} s after the round closed")
            accuracy = page.text_content("#rounds tr[data-round=\"1\"] td.accuracy")
            assert accuracy == "%.2f %%" % (100 * read_jsonl(os.path.join(run_dir, "rounds.jsonl"))[0]["accuracy"])
            # Hostile text: a presence that names another client, and an intruder's capabilities.
            watcher.publish(topics.presence("intruder"), to_json({"status": "online", "client": HOSTILE}),
                            retain=False)
            watcher.publish(topics.presence("intruder-2"), to_json(
                {"status": "online", "client": "intruder-2", "capabilities": {"trainer": HOSTILE}}), retain=False)
            page.wait_for_function("document.querySelector('#rejections').textContent.includes('intruder')",
                                   timeout=5000)
            # intruder-2 said it is online, so the open broker's run selects it: its garbage update on the
            # open plan is judged, and refused with the decoder's reason.
            wait_for(lambda: any(b'"intruder-2"' in p for p in watcher.payloads(topics.round)), 10,
                     "a round that selects intruder-2")
            plan = json.loads([p for p in watcher.payloads(topics.round) if b'"intruder-2"' in p][-1])["plan_id"]
            watcher.publish_blob(topics.update("intruder-2", plan), b"garbage " * 40)
            page.wait_for_function("document.querySelector('#rejections').textContent.includes('wrong magic')",
                                   timeout=5000)
            # A device dies: its last will turns it offline.
            clients[2].send_signal(signal.SIGKILL)
            page.wait_for_function(
                "(document.querySelector('#devices tr[data-client=\"client-002\"] td.offline') || null) !== null",
                timeout=10000)
            _shoot(page, tmp_path, "dashboard-live.png")
            assert coordinator.wait(90) == 0
            page.wait_for_function("document.querySelector('#state').textContent === 'finished'", timeout=5000)
            _shoot(page, tmp_path, "dashboard-finished.png")
            rejections = page.text_content("#rejections")
            backends = page.text_content("#devices")
            assert HOSTILE in rejections and HOSTILE in backends  # shown as text...
            assert page.evaluate("window.__pwned") is None       # ...never run
            # The report of the finished run: no server, the numbers of report.json.
            report_html = os.path.join(run_dir, "report.html")
            assert os.path.isfile(report_html)
            with open(os.path.join(run_dir, "report.json")) as handle:
                report = json.load(handle)
            static = browser.new_page(viewport={"width": 1500, "height": 1000})
            static.goto("file://" + report_html)
            static.wait_for_selector("#rounds tbody tr")
            assert static.text_content("#summary-accuracy") == "%.2f %%" % (100 * report["final_accuracy"])
            assert static.text_content("#summary-round").startswith("%d of %d" % (report["rounds"], 4))
            assert len(static.query_selector_all("#rounds tbody tr")) == report["rounds"]
            up = sum(r["bytes_up"] for r in report["per_round"])
            assert up == report["bytes_up"]
            assert static.evaluate("window.__pwned") is None and HOSTILE in static.text_content("#rejections")
            assert static.text_content("#state") == "finished"
            _shoot(static, tmp_path, "dashboard-report.png")
        finally:
            browser.close()
            watcher.close()
            kill_all(clients + [coordinator])
            log.close()


def test_the_report_command_works_on_a_run_folder_and_escapes_what_devices_wrote(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text(
        json.dumps({"event": "join", "client": "client-000", "capabilities": {"trainer": "</script><b>x"},
                    "time": 1.0}) + "\n" +
        json.dumps({"event": "update", "client": "client-000", "round": 1, "status": "rejected",
                    "reason": "</script><script>alert(1)</script>", "time": 2.0}) + "\n" + "{torn")
    (run_dir / "rounds.jsonl").write_text(json.dumps({
        "round": 1, "accuracy": 0.5, "bytes_up": 10, "bytes_down": 20, "selected": ["client-000"],
        "accepted": [], "clients": {"client-000": {"status": "rejected"}}, "time": 3.0}) + "\n")
    status = subprocess.run([sys.executable, "-m", "coordinator", "report", str(run_dir)], cwd=ROOT,
                            env=python_env(), capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    html = (run_dir / "report.html").read_text()
    # The data sits in a JSON script element that no device text can close.
    data = html.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "</script" not in data and "<b>" not in data
    view = json.loads(data)
    assert view["rejections"][0]["reason"] == "</script><script>alert(1)</script>"
    assert view["devices"][0]["backend"] == "</script><b>x" and view["rounds"][0]["accuracy"] == 0.5
    missing = subprocess.run([sys.executable, "-m", "coordinator", "report", str(tmp_path / "nothing")], cwd=ROOT,
                             env=python_env(), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "not a run folder" in missing.stderr
    assert render_report(RunView()).startswith(b"<!doctype html>")
    assert view_from_run_dir(str(run_dir)).snapshot()["header"]["state"] == "waiting for devices"
