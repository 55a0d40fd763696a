"""The web console in a real browser: Debian's chromium driven by Playwright, a real server,
real containers on the Docker engine.

A job's status, log and loss chart are watched growing in its page; a job is stopped from
its page; an endpoint answers the "try it" form; 1,000 jobs are paged through; a tuning job's
leaderboard and the model registry's approval work; a request without a session and an action
without its CSRF token are refused. Each view's screenshot is saved under ``ARTIFACTS``
(``SHIPYARD_TEST_ARTIFACTS``, else the temporary folder); ``docs/console/`` holds copies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import ApiServer
from shipyard.console.auth import sign_link
from shipyard.control import ControlPlane
from shipyard.runtimes import DockerRuntime
from shipyard.settings import Settings
from tests.support import console as support
from tests.support.images import SESSION_SCOPE, build_image
from tests.support.jobs import training_request
from tests.support.planes import deploy, remove_endpoints
from tests.support.polling import until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Milliseconds the browser waits for what a page should come to show.
WAIT_MS = 60_000

TRAIN = '''import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))
epochs, pause = int(hp.get("epochs", "20")), float(hp.get("pause", "0.5"))
x = float(hp.get("x", "1"))
for epoch in range(epochs):
    loss = (x - 2.0) ** 2 + 1.0 / (epoch + 1)
    print(f"epoch {epoch}: loss={loss:.4f}", flush=True)
    time.sleep(pause)
open("/opt/ml/model/model.txt", "w").write("trained")
'''
METRICS = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}]


@pytest.fixture(scope="module")
def console_image(docker_client: Any, base_image: str) -> str:
    return build_image(docker_client, "console-train", {"t.py": TRAIN},
                       'COPY t.py /opt/program/\nENTRYPOINT ["python3", "/opt/program/t.py"]',
                       with_toolkit=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[ApiServer]:
    """One API server over real containers for the module (3 s stop grace)."""
    data = tmp_path_factory.mktemp("console-browser")
    settings = Settings.load({"data_dir": str(data / "state"), "stop_grace_seconds": 3,
                              "api_port": 0}, environ={})
    runtime = DockerRuntime(docker_client, labels={"org.shipyard.scope": SESSION_SCOPE})
    plane = ControlPlane(settings, runtime)
    api = ApiServer(settings, plane)
    api.start_in_thread()
    try:
        yield api
    finally:
        remove_endpoints(plane)
        api.stop()
        plane.close()


def _missing(what: str) -> None:
    # As with the engine (tests/conftest.py): a failure in CI, never a silent skip.
    message = f"{what} (scripts/setup.sh --test installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is needed: pip install playwright (never `playwright install`)")
        raise
    if not CHROMIUM.exists():
        _missing("Debian's chromium is needed: apt-get install -y chromium")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any, server: ApiServer) -> Iterator[Any]:
    """A fresh browser context, logged in with a one-time link as ``server status`` prints."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    akid, secret = server.keys.default
    tab.goto(f"{server.url}/console/login/link?token={sign_link(akid, secret)}")
    tab.wait_for_url(f"{server.url}/console/")
    try:
        yield tab
    finally:
        context.close()


def shot(tab: Any, name: str) -> None:
    support.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(support.ARTIFACTS / f"{name}.png"), full_page=True)


def job(name: str, image: str, tmp: Path, **hyperparameters: str) -> dict[str, Any]:
    request = training_request(name, tmp, image=image, max_runtime_s=600, volume_gb=1)
    request["AlgorithmSpecification"]["MetricDefinitions"] = METRICS
    request["HyperParameters"] = hyperparameters
    return request


def log_lines(tab: Any) -> int:
    return int(tab.locator("#log .line").count())


def chart_points(tab: Any) -> int:
    return int(tab.get_attribute("#job-metrics", "data-points") or 0)


# -- access -----------------------------------------------------------------------------------
def test_login_form_and_the_home_page(chromium: Any, server: ApiServer) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        tab = context.new_page()
        tab.goto(f"{server.url}/console/jobs")
        assert tab.url.startswith(f"{server.url}/console/login?next=")
        shot(tab, "login")
        akid, secret = server.keys.default
        tab.fill("input[name=access_key]", akid)
        tab.fill("input[name=secret]", secret + "-wrong")
        tab.click("button[type=submit]")
        assert "Wrong access key or secret" in tab.inner_text("main")
        tab.fill("input[name=access_key]", akid)
        tab.fill("input[name=secret]", secret)
        tab.click("button[type=submit]")
        tab.wait_for_url(re.compile(r".*/console/jobs$"))
        cookie = next(c for c in context.cookies() if c["name"] == "shipyard_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert tab.evaluate("document.cookie") == ""  # HttpOnly: not for scripts
    finally:
        context.close()


def test_a_login_link_opened_from_another_site_logs_in(chromium: Any,
                                                       server: ApiServer) -> None:
    """The link as a chat or a mail page shows it: a cross-site navigation, after which a
    SameSite=Strict cookie is sent only on the console's own next move."""
    context = chromium.new_context()
    try:
        tab = context.new_page()
        akid, secret = server.keys.default
        link = f"{server.url}/console/login/link?token={sign_link(akid, secret)}"
        tab.set_content(f'<a id="link" href="{link}">open the console</a>')
        tab.click("#link")
        tab.wait_for_url(f"{server.url}/console/")
        assert tab.inner_text("main h1") == "Home"
    finally:
        context.close()


def test_a_request_without_a_session_is_refused(chromium: Any, server: ApiServer) -> None:
    context = chromium.new_context()
    try:
        tab = context.new_page()
        tab.goto(f"{server.url}/console/endpoints")
        assert "/console/login" in tab.url and "Log in" in tab.inner_text("h1")
        status = tab.evaluate("fetch('/console/jobs?fragment=1').then(r => r.status)")
        assert status == 401
    finally:
        context.close()


def test_a_forged_action_without_the_csrf_token_is_refused(page: Any, server: ApiServer,
                                                           console_image: str,
                                                           tmp_path: Path) -> None:
    plane = server.plane
    plane.create("training", job("console-forged", console_image, tmp_path, epochs="200"))
    try:
        page.goto(f"{server.url}/console/jobs/training/console-forged")
        answer = page.evaluate("""fetch('/console/jobs/training/console-forged/stop', {
            method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'stop=1'}).then(async r => [r.status, await r.text()])""")
        assert answer[0] == 403 and "CSRF" in answer[1]
        assert plane.describe("training", "console-forged")["TrainingJobStatus"] == "InProgress"
    finally:
        plane.stop("training", "console-forged")


# -- jobs -------------------------------------------------------------------------------------
def test_page_through_a_thousand_jobs(page: Any, server: ApiServer) -> None:
    support.seed_training_jobs(server.plane.ctx.store.path, 1000, prefix="paged",
                               start=1_600_000_000.0)
    page.goto(f"{server.url}/console/jobs?name=paged-&size=100")
    positions = [page.inner_text(".pager .position >> nth=0")]
    assert positions[0] == "1\u2013100 of 1,000"
    first_names = page.locator("table.jobs tbody tr").first.get_attribute("data-job")
    assert first_names == "training/paged-00999"
    for _ in range(9):
        page.click("a[rel=next] >> nth=0")
        positions.append(page.inner_text(".pager .position >> nth=0"))
    assert positions[-1] == "901\u20131,000 of 1,000"
    assert page.locator("table.jobs tbody tr").last.get_attribute("data-job") == \
        "training/paged-00000"
    assert page.locator("a[rel=next]").count() == 0
    page.click("a[rel=prev] >> nth=0")
    assert page.inner_text(".pager .position >> nth=0") == "801\u2013900 of 1,000"
    # Sorted by name, oldest-first by a click on the header.
    page.goto(f"{server.url}/console/jobs?name=paged-&size=100")
    page.click("table.jobs thead a:has-text('name')")
    page.click("table.jobs thead a:has-text('name')")
    assert page.locator("table.jobs tbody tr").first.get_attribute("data-job") == \
        "training/paged-00000"
    page.goto(f"{server.url}/console/jobs?size=20")
    shot(page, "jobs")
    page.goto(f"{server.url}/console/")
    assert "AlgorithmError: exit code 1" in page.inner_text("main")


def test_a_running_job_shows_its_status_log_and_chart_growing(
        page: Any, server: ApiServer, console_image: str, tmp_path: Path) -> None:
    plane = server.plane
    plane.create("training", job("console-live", console_image, tmp_path, epochs="30",
                                 pause="0.4"))
    page.goto(f"{server.url}/console/jobs/training/console-live")
    assert "InProgress" in page.inner_text("#job-status-text")
    # The log follows as the job writes it, and the loss chart grows with it.
    until("log lines in the page", lambda: log_lines(page) >= 3)
    seen_lines, seen_points = log_lines(page), chart_points(page)
    until("more log lines", lambda: log_lines(page) > seen_lines + 3)
    until("more chart points", lambda: chart_points(page) > seen_points)
    shot(page, "job-running")
    home = page.context.new_page()
    home.goto(f"{server.url}/console/")
    assert "console-live" in home.inner_text("main")  # running now
    shot(home, "home")
    home.close()
    # The status changes in the page by itself, without a reload.
    page.wait_for_selector("#job-status-text [data-status=Completed]")
    until("all 30 lines", lambda: log_lines(page) >= 30)
    assert "epoch 29: loss=" in page.inner_text("#log")
    page.reload()
    assert "Training" in (page.text_content(".timeline") or "")
    shot(page, "job")
    # The home page and the list link to it.
    page.goto(f"{server.url}/console/jobs?name=console-live")
    page.click("text=console-live")
    page.wait_for_url(re.compile(r".*/jobs/training/console-live$"))


def test_stop_a_job_from_its_page(page: Any, server: ApiServer, console_image: str,
                                  tmp_path: Path) -> None:
    plane = server.plane
    plane.create("training", job("console-stop", console_image, tmp_path, epochs="600"))
    listing = page.context.new_page()
    listing.goto(f"{server.url}/console/jobs?name=console-stop")
    row = "tr[data-job='training/console-stop']"
    assert "InProgress" in listing.inner_text(row)
    page.goto(f"{server.url}/console/jobs/training/console-stop")
    until("the job's log", lambda: log_lines(page) >= 1)
    page.click("button:has-text('Stop')")
    page.wait_for_selector("#job-status-text [data-status=Stopping], "
                           "#job-status-text [data-status=Stopped]")
    page.wait_for_selector("#job-status-text [data-status=Stopped]")
    assert plane.describe("training", "console-stop")["TrainingJobStatus"] == "Stopped"
    # The list, open meanwhile, updates itself.
    listing.wait_for_selector(f"{row} [data-status=Stopped]")


# -- endpoints ----------------------------------------------------------------------------------
def test_invoke_an_endpoint_from_the_form(page: Any, server: ApiServer, chromium: Any,
                                          images: dict[str, str]) -> None:
    deploy(server.plane, "console-ep", images["plain-serve"], None)
    page.goto(f"{server.url}/console/endpoints")
    page.click("text=console-ep")
    page.wait_for_url(re.compile(r".*/endpoints/console-ep$"))
    assert "InService" in page.inner_text("main")
    # Its instance, running and routed to; its creation in the update history.
    assert page.locator("#instances [data-health=routed]").count() == 1
    assert "running" in page.inner_text("#instances")
    assert page.locator("#history tr[data-outcome=InService]").count() == 1
    page.fill("textarea[name=payload]", '{"rows": [1, 2, 3]}')
    page.click("button:has-text('Invoke')")
    page.wait_for_selector("#answer-body")
    answer = page.inner_text("#answer-body")
    assert '\\"rows\\"' in answer or '"rows"' in answer, answer
    assert "AllTraffic" in page.inner_text("#answer")
    page.fill("textarea[name=payload]", "fail")
    page.click("button:has-text('Invoke')")
    page.wait_for_selector("#answer .status-bad")
    assert "bad input: fail" in page.inner_text("#answer-body")
    # The invocations reach the chart (the router records them every few seconds).
    page.fill("textarea[name=payload]", "[1]")
    page.click("button:has-text('Invoke')")
    until("invocations in the chart", lambda: (page.reload() or True) and int(
        page.get_attribute("#endpoint-Invocations", "data-points") or 0) > 0)
    page.fill("textarea[name=payload]", '{"rows": [1, 2, 3]}')
    page.click("button:has-text('Invoke')")
    page.wait_for_selector("#answer-body")
    shot(page, "endpoint")
    # Without JavaScript the form posts and the page comes back with the answer.
    context = chromium.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        akid, secret = server.keys.default
        plain.goto(f"{server.url}/console/login/link?token={sign_link(akid, secret)}")
        plain.goto(f"{server.url}/console/endpoints/console-ep")
        plain.fill("textarea[name=payload]", "no script")
        plain.click("button:has-text('Invoke')")
        assert "no script" in plain.inner_text("#answer-body")
        assert plain.input_value("textarea[name=payload]") == "no script"
    finally:
        context.close()


# -- tuning and the registry --------------------------------------------------------------------
def test_tuning_leaderboard_and_model_registry(page: Any, server: ApiServer,
                                               console_image: str, tmp_path: Path) -> None:
    plane = server.plane
    definition = job("unused", console_image, tmp_path)
    del definition["TrainingJobName"]
    definition["StaticHyperParameters"] = {"epochs": "3", "pause": "0.1"}
    del definition["HyperParameters"]
    plane.create("tuning", {
        "HyperParameterTuningJobName": "console-tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random", "RandomSeed": 3,
            "HyperParameterTuningJobObjective": {"Type": "Minimize",
                                                 "MetricName": "train:loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"ContinuousParameterRanges": [
                {"Name": "x", "MinValue": "0", "MaxValue": "4"}]}},
        "TrainingJobDefinition": definition})
    record = plane.wait("tuning", "console-tune", timeout=300)
    best = record["BestTrainingJob"]["TrainingJobName"]
    page.goto(f"{server.url}/console/jobs/tuning/console-tune")
    assert page.locator("table.leaderboard tbody tr").count() == 4
    best_row = page.locator("table.leaderboard tr.best")
    assert best_row.count() == 1 and best in best_row.inner_text()
    # Minimized: sorted by the objective, the best trial is first.
    assert best in page.locator("table.leaderboard tbody tr").first.inner_text()
    assert int(page.get_attribute("#objective-chart", "data-points") or 0) == 4
    shot(page, "tuning")
    page.click("table.leaderboard thead a:has-text('train:loss')")
    assert best in page.locator("table.leaderboard tbody tr").last.inner_text()
    # The best trial's page links back to its tuning job.
    page.click(f"table.leaderboard a:has-text('{best}')")
    assert page.locator("a:has-text('console-tune')").count() >= 1

    trained = plane.describe("training", best)
    plane.create("model-package-group", {"ModelPackageGroupName": "console-models",
                                         "ModelPackageGroupDescription": "from the console"})
    plane.create("model-package", {
        "ModelPackageGroupName": "console-models",
        "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {
            "Containers": [{"Image": console_image,
                            "ModelDataUrl": trained["ModelArtifacts"]["S3ModelArtifacts"]}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"]}})
    page.goto(f"{server.url}/console/registry")
    page.click("text=console-models")
    row = page.locator("tr[data-version='1']")
    assert "PendingManualApproval" in row.inner_text()
    row.locator("button:has-text('Approve')").click()
    page.wait_for_selector("tr[data-version='1'] [data-status=Approved]")
    record = plane.describe("model-package", "console-models/1")
    assert record["ModelApprovalStatus"] == "Approved"
    shot(page, "registry")
    # The version links to the trial it came from, and the trial to the version.
    page.click(f"tr[data-version='1'] a:has-text('{best}')")
    page.wait_for_url(re.compile(rf".*/jobs/training/{best}$"))
    assert page.locator("a[href$='/registry/console-models']").count() == 1


def test_pages_read_without_javascript(chromium: Any, server: ApiServer) -> None:
    context = chromium.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        akid, secret = server.keys.default
        tab.goto(f"{server.url}/console/login/link?token={sign_link(akid, secret)}")
        for path in ("/", "/jobs", "/endpoints", "/registry"):
            tab.goto(f"{server.url}/console{path}")
            assert tab.locator("main h1").count() == 1, path
    finally:
        context.close()


def test_dark_and_light_follow_the_system_and_statuses_read_without_colour(
        chromium: Any, server: ApiServer) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        context = chromium.new_context(color_scheme=scheme,
                                       viewport={"width": 1280, "height": 800})
        try:
            tab = context.new_page()
            akid, secret = server.keys.default
            tab.goto(f"{server.url}/console/login/link?token={sign_link(akid, secret)}")
            tab.wait_for_url(f"{server.url}/console/")
            backgrounds[scheme] = tab.evaluate(
                "getComputedStyle(document.body).backgroundColor")
            # Each status is a symbol and a word, not a colour alone.
            first = tab.locator("table.counts thead .status").first.inner_text()
            assert re.fullmatch(r"\S \w+", first), first
            if scheme == "dark":
                shot(tab, "home-dark")
        finally:
            context.close()
    light = [int(v) for v in re.findall(r"\d+", backgrounds["light"])[:3]]
    dark = [int(v) for v in re.findall(r"\d+", backgrounds["dark"])[:3]]
    assert sum(light) > 600 and sum(dark) < 150, backgrounds
