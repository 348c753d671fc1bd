"""The run report as a user sees it: Debian's Chromium, driven headless by Playwright, logs in to the Airflow UI,
opens a finished run of the toy fine-tune, opens its "DPO report" tab and finds the curves drawn.

One service group (api-server, scheduler, dag-processor, triggerer; SQLite) runs the module, as
``tests/integration/airflow/test_services_sqlite.py`` starts it, with the ``dpo_notify`` Connection pointing
at a local SMTP server (aiosmtpd). Besides the report tab, the module checks the "DPO runs" page of the UI's
navigation, the email a failed run sends (from the dag-processor's DAG-level failure callback) and the dataset
Asset event of the run's ``stage``. The screenshot of the report tab is kept under ``artifacts/ci/`` (its path
is printed).
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from email import message_from_bytes, policy

import pytest

from tests.conftest import REPO
from tests.support.airflow_services import make_workdir, running_services, tail, trigger_cli
from tests.support.host import chromium_executable
from tests.support.storage_emulator import free_port

pytestmark = pytest.mark.slow

SCREENSHOTS = REPO / "artifacts" / "ci"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SMTP_PASSWORD = f"planted-secret-{uuid.uuid4().hex}"
CONF = {
    "dataset_uri": "data/small.json",
    "exp_name": "ui",
    "overrides": {"max_steps": 12, "log_every": 2, "eval_every": 6, "checkpoint_every": 0, "n_eval_examples": 8},
}


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture(scope="module")
def inbox():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    box = Inbox()
    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port, auth_require_tls=False,
                            authenticator=lambda *args: AuthResult(success=args[-1].password == SMTP_PASSWORD.encode()))  # fmt: skip
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def services(tmp_path_factory, inbox):
    chromium_executable()  # an unprovisioned machine fails here, before the services start
    root = tmp_path_factory.mktemp("ui")
    work = make_workdir(root / "work")
    notify = {"conn_type": "smtp", "host": "127.0.0.1", "port": inbox.port, "login": "dpo-bot",
              "password": SMTP_PASSWORD, "extra": {"to": "ml-team@example.com", "from_email": "dpo@example.com",
                                                   "disable_tls": True, "disable_ssl": True, "retry_limit": 0}}  # fmt: skip
    with running_services(root, work, {"AIRFLOW_CONN_DPO_NOTIFY": json.dumps(notify)}) as running:
        yield running


@pytest.fixture(scope="module")
def finished_run(services) -> str:
    started = time.monotonic()
    result = trigger_cli(services, CONF)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + tail(services.log, 3000)
    print(f"\nthe toy run took {time.monotonic() - started:.1f}s through the services")
    return result.stdout.split("dag_run_id: ", 1)[1].split()[0]


def rest(services, path: str) -> dict:
    request = urllib.request.Request(f"{services.url}{path}", headers={"Authorization": f"Bearer {services.token()}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_report_tab_of_a_finished_run_shows_its_curves_in_the_airflow_ui(services, finished_run):
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    run_page = f"{services.url}/dags/dpo_finetune/runs/{urllib.parse.quote(finished_run, safe='')}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "report-tab.png"
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium_executable(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1100},
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(run_page)  # no session yet: Airflow's login page
            page.locator("input[name=username]").fill(services.credentials.username)
            page.locator("input[name=password]").fill(services.credentials.password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
            if "/runs/" not in page.url:
                page.goto(run_page)

            page.get_by_role("tab", name="DPO report").or_(page.get_by_role("link", name="DPO report")).first.click()
            report = page.frame_locator("iframe[title='DPO report']")
            plots = report.locator("figure.plot svg")
            expect(plots).to_have_count(3, timeout=60_000)
            metrics = report.locator("figure.plot").evaluate_all("fs => fs.map(f => f.dataset.metric)")
            assert metrics == ["loss", "rewards/accuracies", "rewards/margins"]
            for index in range(3):
                box = plots.nth(index).bounding_box()
                assert box and box["width"] > 100 and box["height"] > 50, box
                assert plots.nth(index).locator("path").count() > 10  # axes, ticks and the lines, drawn
            expect(report.locator("#tasks")).to_contain_text("evaluate")
            expect(report.locator("#eval")).to_contain_text("reference")
            expect(report.locator("#dataset")).to_contain_text("small.json")
            expect(report.get_by_text("open in Airflow")).to_have_count(0)  # the tab's sandbox: no way out
            expect(report.locator("#promotion")).to_contain_text("first")  # no champion yet: the first version
            expect(report.locator("#samples")).to_contain_text("policy")
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the report tab: {shot}")

            page.goto(f"{services.url}/plugin/dpo-runs")  # the navigation's "DPO runs" page
            runs = page.frame_locator("iframe[title='DPO runs']").locator("#runs")
            expect(runs).to_contain_text(finished_run, timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "runs-list.png"), full_page=True)
        finally:
            browser.close()
    print(f"the browser part took {time.monotonic() - started:.1f}s")


def test_the_run_emitted_its_dataset_and_registered_model_as_asset_events(services, finished_run):
    events = rest(services, "/api/v2/assets/events?limit=100&order_by=timestamp")["asset_events"]
    mine = {e["source_task_id"]: e for e in events if e.get("source_run_id") == finished_run}
    assert mine["stage"]["uri"] == (services.work / "data" / "small.json").resolve().as_uri(), events
    assert len(mine["stage"]["extra"]["sha256"]) == 64
    assert mine["promote"]["uri"] == "models:/ui" and mine["promote"]["extra"]["decision"] == "first"


def test_the_first_registered_model_is_emailed_by_the_promote_task(finished_run, inbox):
    deadline = time.monotonic() + 30
    while not (sent := [m for m in inbox.messages if "first model registered" in m["Subject"]]):
        assert time.monotonic() < deadline, [m["Subject"] for m in inbox.messages]
        time.sleep(1)
    assert sent[0]["Subject"] == "[DPO] first model registered: ui version 1"
    assert urllib.parse.quote(finished_run, safe="") in sent[0].get_body(("html", "plain")).get_content()


def test_a_failed_run_is_emailed_by_the_dag_failure_callback(services, inbox):
    result = trigger_cli(services, {"dataset_uri": "data/not-there.json", "exp_name": "ui-fails"}, timeout=300)
    assert result.returncode != 0
    run_id = result.stdout.split("dag_run_id: ", 1)[1].split()[0]
    deadline = time.monotonic() + 60
    while not [m for m in inbox.messages if run_id in m["Subject"]] and time.monotonic() < deadline:
        time.sleep(1)
    (message,) = [m for m in inbox.messages if run_id in m["Subject"]]
    assert message["Subject"] == f"[DPO] dpo_finetune run {run_id} failed at stage"
    text = message.get_body(("html", "plain")).get_content()
    assert "/dpo/runs/dpo_finetune/" in text and SMTP_PASSWORD not in message.as_string()
    assert SMTP_PASSWORD not in services.log.read_text(errors="replace")
