"""The web console over HTTP, without a browser: access (login, one-time links, sessions,
CSRF), the merged job list's paging over 10,000 jobs, and the package's files.

A real API server in a thread, real HTTP (urllib); the jobs are records the control plane's
own code builds, written through its store. The browser tests are tests/test_console_browser.py.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

import shipyard.console
from shipyard.api.server import ApiServer
from shipyard.console.auth import Gate, sign_link
from shipyard.console.listing import JobQuery, Lister, decode_cursor, encode_cursor
from shipyard.control import ControlPlane
from shipyard.runtimes import FakeRuntime
from shipyard.settings import Settings
from tests.support.console import seed_training_jobs
from tests.support.jobs import FAKE_IMAGE

ROOT = Path(__file__).resolve().parent.parent
JOBS = 10_000
PAGE_BUDGET_S = 0.200


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects (tests look at them)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()

        class Keep(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  Keep)

    def request(self, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def login(self, akid: str, secret: str) -> None:
        status, _, _ = self.request("/console/login", {"access_key": akid,
                                                              "secret": secret})
        assert status == 303, status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One API server over a plane holding 10,000 ended training jobs (no containers)."""
    data = tmp_path_factory.mktemp("console") / "state"
    data.mkdir()
    seed_training_jobs(data / "state.db", JOBS)
    settings = Settings.load({"data_dir": str(data), "api_port": 0}, environ={})
    plane = ControlPlane(settings, FakeRuntime(images=[FAKE_IMAGE]))
    api = ApiServer(settings, plane)
    api.start_in_thread()
    try:
        yield api
    finally:
        api.stop()
        plane.close()


@pytest.fixture
def browser(server: ApiServer) -> Browser:
    client = Browser(server.url)
    client.login(*server.keys.default)
    return client


# -- access -----------------------------------------------------------------------------------
def test_pages_without_a_session_go_to_the_login_form_and_data_is_refused(
        server: ApiServer) -> None:
    anonymous = Browser(server.url)
    status, headers, _ = anonymous.request("/console/jobs?kind=training")
    assert status == 303
    assert headers["location"].startswith("/console/login?next=")
    status, _, body = anonymous.request("/console/jobs?fragment=1")
    assert (status, "seeded-" in body) == (401, False)
    status, _, body = anonymous.request("/console/jobs/training/seeded-00001/log")
    assert status == 401
    status, _, _ = anonymous.request("/console/jobs/training/seeded-00001/stop", {})
    assert status == 401
    # A forged cookie is no session.
    anonymous.jar.set_cookie(http.cookiejar.Cookie(
        0, "shipyard_console", "SYAKXXXXXXXXXXXXXXXX.9999999999.sid.sig", None, False,
        "127.0.0.1", False, False, "/console", True, False, None, False, None, None, {}))
    assert anonymous.request("/console/")[0] == 303


def test_login_form_checks_the_api_keys_and_sets_a_strict_http_only_cookie(
        server: ApiServer) -> None:
    akid, secret = server.keys.default
    client = Browser(server.url)
    status, _, body = client.request("/console/login", {"access_key": akid,
                                                         "secret": secret + "x"})
    assert status == 403 and "Wrong access key or secret" in body
    status, headers, _ = client.request("/console/login", {
        "access_key": akid, "secret": secret, "next": "/console/jobs"})
    assert (status, headers["location"]) == (303, "/console/jobs")
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert secret not in cookie
    assert client.request("/console/")[0] == 200
    # An open redirect is not offered: only the console's own paths.
    status, headers, _ = Browser(server.url).request("/console/login", {
        "access_key": akid, "secret": secret, "next": "https://evil.example/"})
    assert headers["location"] == "/console/"


def test_login_link_works_once(server: ApiServer) -> None:
    akid, secret = server.keys.default
    token = sign_link(akid, secret)
    first = Browser(server.url)
    status, headers, body = first.request(f"/console/login/link?token={token}")
    assert status == 200 and "shipyard_console=" in headers["set-cookie"]
    # The page moves on by itself (a redirect would lose a SameSite=Strict cookie when the
    # link was opened from another site).
    assert '<meta http-equiv="refresh" content="0; url=/console/">' in body
    assert first.request("/console/")[0] == 200
    status, _, body = Browser(server.url).request(f"/console/login/link?token={token}")
    assert status == 403 and "used up" in body
    forged = token[:-4] + "AAAA"
    assert Browser(server.url).request(f"/console/login/link?token={forged}")[0] == 403


def test_login_links_stay_used_after_a_restart(tmp_path: Path) -> None:
    secrets = {"SYAKTEST": "s" * 40}
    token = sign_link("SYAKTEST", "s" * 40)
    assert Gate(secrets, tmp_path / "links").redeem(token) is not None
    assert Gate(secrets, tmp_path / "links").redeem(token) is None
    expired = sign_link("SYAKTEST", "s" * 40, now=time.time() - 7200)
    assert Gate(secrets, tmp_path / "links").redeem(expired) is None


def test_a_removed_key_ends_its_sessions(tmp_path: Path) -> None:
    secrets = {"SYAKTEST": "s" * 40}
    gate = Gate(secrets, None)
    cookie = gate.login("SYAKTEST", "s" * 40)
    assert cookie is not None and gate.session(cookie) is not None
    del secrets["SYAKTEST"]
    assert gate.session(cookie) is None


def test_actions_without_the_csrf_token_are_refused(server: ApiServer,
                                                    browser: Browser) -> None:
    for path in ("/jobs/training/seeded-00001/stop", "/registry/g/1/approval",
                 "/endpoints/e/invoke"):
        status, _, body = browser.request("/console" + path, {"decision": "approve"})
        assert status == 403 and "CSRF" in body, path
        status, _, _ = browser.request("/console" + path, {"csrf": "forged"})
        assert status == 403, path
    # The right token from another origin is refused too.
    page = browser.request("/console/jobs/training/seeded-00001")[2]
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    status, _, _ = browser.request("/console/jobs/training/seeded-00001/stop",
                                   {"csrf": token.group(1)},
                                   headers={"Origin": "https://evil.example"})
    assert status == 403
    # With it, the action runs (the job has ended: nothing to stop; back to its page).
    status, headers, _ = browser.request("/console/jobs/training/seeded-00001/stop",
                                         {"csrf": token.group(1)})
    assert (status, headers["location"]) == (303, "/console/jobs/training/seeded-00001")


def test_pages_carry_security_headers(browser: Browser) -> None:
    _, headers, _ = browser.request("/console/")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert "script-src 'self'" in lowered["content-security-policy"]
    assert lowered["x-frame-options"] == "DENY"
    assert lowered["referrer-policy"] == "same-origin"
    assert lowered["cache-control"] == "no-store"


# -- the job list -----------------------------------------------------------------------------
def _page_seconds(browser: Browser, path: str, lister: Lister | None = None
                  ) -> tuple[float, str]:
    """The best of three requests, each from scratch (no counts kept from the one before)."""
    best, body = float("inf"), ""
    for _ in range(3):
        if lister is not None:
            lister.forget()
        started = time.perf_counter()
        status, _, body = browser.request(path)
        best = min(best, time.perf_counter() - started)
        assert status == 200, body[:500]
    return best, body


@pytest.mark.parametrize("query", [
    "", "?at=training:9950", "?sort=name&order=asc&at=training:5000",
    "?sort=status&at=training:7000", "?status=Failed", "?name=0999",
    "?status=Failed&after=2023-11-17", "?kind=training&size=200&at=training:9800",
], ids=["first", "last", "by-name-middle", "by-status-middle", "failed", "name", "failed-after",
        "200-rows"])
def test_ten_thousand_jobs_page_within_200_ms(server: ApiServer, browser: Browser,
                                              query: str) -> None:
    seconds, body = _page_seconds(browser, "/console/jobs" + query, server.app.console.lister)
    assert seconds <= PAGE_BUDGET_S, f"{seconds * 1000:.0f} ms for {query or 'the first page'}"
    assert 'class="position"' in body


def test_first_and_last_pages_show_the_right_rows(browser: Browser) -> None:
    body = browser.request("/console/jobs")[2]
    assert "1&ndash;50 of 10,000" in body
    assert body.index("seeded-09999") < body.index("seeded-09950")  # newest first
    body = browser.request("/console/jobs?at=training:9950")[2]
    assert "9,951&ndash;10,000 of 10,000" in body
    assert "seeded-00000" in body and 'rel="next"' not in body


def test_filters_count_what_matches(browser: Browser) -> None:
    body = browser.request("/console/jobs?status=Failed")[2]
    assert "of 2,000" in body  # every fifth job failed
    assert "AlgorithmError" in body  # with its reason
    body = browser.request("/console/jobs?name=seeded-0999")[2]
    assert "1&ndash;10 of 10" in body
    body = browser.request("/console/jobs?kind=processing")[2]
    assert "no jobs match" in body


def test_walking_every_page_both_ways_sees_each_job_once(server: ApiServer) -> None:
    lister = Lister(server.plane)
    query = JobQuery(size=700, sort="name", descending=False)
    seen: list[str] = []
    cursors = []
    cursor: dict[str, int] | None = {}
    while cursor is not None:
        cursors.append(cursor)
        page = lister.page(query, cursor)
        seen += [row.name for row in page.rows]
        cursor = page.next_cursor
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == JOBS
    # Backwards, from the last page, each page's "previous" is the page before it.
    back = lister.page(query, cursors[-1])
    for expected in reversed(cursors[:-1]):
        assert back.prev_cursor is not None
        assert {k: v for k, v in back.prev_cursor.items() if v} == \
            {k: v for k, v in expected.items() if v}
        back = lister.page(query, back.prev_cursor)
    assert back.prev_cursor is None
    assert decode_cursor(encode_cursor({"training": 5, "tuning": 2})) == {
        "training": 5, "tuning": 2}


def test_home_counts_jobs_by_status(server: ApiServer, browser: Browser) -> None:
    seconds, body = _page_seconds(browser, "/console/", server.app.console.lister)
    assert seconds <= PAGE_BUDGET_S
    assert re.search(r'data-count="training-Completed">6,000<', body)
    assert re.search(r'data-count="training-Failed">2,000<', body)
    assert "Recent failures" in body and "AlgorithmError: exit code 1" in body


def test_a_job_page_and_missing_things(browser: Browser) -> None:
    status, _, body = browser.request("/console/jobs/training/seeded-00003")
    assert status == 200
    assert "Secondary status timeline" in body and "max_depth" in body
    assert "s3://bench-bucket/xgb/train/" in body
    assert browser.request("/console/jobs/training/nope")[0] == 404
    assert browser.request("/console/jobs/nokind/x")[0] == 404
    assert browser.request("/console/nothing-here")[0] == 404
    assert browser.request("/console/static/../app.py")[0] == 404
    status, headers, _ = browser.request("/console/static/vendor/htmx-2.0.11.min.js")
    assert status == 200 and "javascript" in headers["content-type"]


# -- the package ------------------------------------------------------------------------------
def test_public_surface() -> None:
    assert set(shipyard.console.__all__) == {"PREFIX", "Console", "login_link"}
    for name in shipyard.console.__all__:
        assert hasattr(shipyard.console, name)


def test_templates_and_static_files_go_into_the_wheel() -> None:
    """Every file the console serves matches the package-data patterns in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["shipyard.console"]
    folder = ROOT / "src" / "shipyard" / "console"
    files = [p.relative_to(folder) for p in folder.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files
    for path in files:
        assert any(path.match(pattern) for pattern in patterns), path
    vendored = (folder / "static" / "VENDORED.md").read_text()
    for name in (folder / "static" / "vendor").iterdir():
        if name.suffix in (".js", ".css"):
            assert name.name in vendored, name


# -- the model registry -----------------------------------------------------------------------
def test_approve_and_reject_a_version(server: ApiServer, browser: Browser) -> None:
    plane = server.plane
    plane.create("model-package-group", {"ModelPackageGroupName": "http-models"})
    plane.create("model-package", {
        "ModelPackageGroupName": "http-models", "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {"Containers": [{"Image": FAKE_IMAGE}],
                                   "SupportedContentTypes": ["text/csv"],
                                   "SupportedResponseMIMETypes": ["text/csv"]}})
    page = browser.request("/console/registry/http-models")[2]
    assert "PendingManualApproval" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    for decision, status in (("approve", "Approved"), ("reject", "Rejected")):
        answer = browser.request("/console/registry/http-models/1/approval",
                                 {"csrf": token.group(1), "decision": decision})
        assert answer[0] == 303, answer[2][:2000]
        assert plane.describe("model-package", "http-models/1")["ModelApprovalStatus"] == status
    assert "http-models" in browser.request("/console/registry")[2]


def test_server_status_prints_a_login_link_that_works(server: ApiServer) -> None:
    from shipyard.api.server import ServerInfo
    from shipyard.cli.server import console_link

    link = console_link(server.settings, ServerInfo(url=server.url, pid=0))
    assert link.startswith(f"{server.url}/console/login/link?token=")
    client = Browser(server.url)
    status, headers, _ = client.request(link[len(server.url):])
    assert status == 200 and "shipyard_console=" in headers["set-cookie"]
    assert client.request("/console/")[0] == 200


# -- logs ---------------------------------------------------------------------------------------
def test_a_hundred_megabyte_log_opens_at_once_and_pages(server: ApiServer,
                                                        browser: Browser) -> None:
    from shipyard.runtimes.base import LogLine

    logs = server.plane.ctx.logs
    line = "x" * 190
    for block in range(10):  # 10 x 55,000 lines of ~210 bytes: ~110 MB
        logs.append("training", "seeded-00007", "algo-1", (
            LogLine(1_700_000_000_000_000_000 + (block * 55_000 + i) * 1_000_000,
                    f"{block * 55_000 + i:07d} {line}") for i in range(55_000)))
    path = logs.path("training", "seeded-00007", "algo-1")
    try:
        _page_a_big_log(browser, path)
    finally:
        path.unlink()  # 110 MB: not kept with the test's folder


def _page_a_big_log(browser: Browser, path: Path) -> None:
    assert path.stat().st_size > 100 * 1024 * 1024
    seconds, body = _page_seconds(browser, "/console/jobs/training/seeded-00007")
    assert seconds <= PAGE_BUDGET_S, f"{seconds * 1000:.0f} ms"
    assert "0549999 xxx" in body and "0549700 xxx" in body and "0549699 xxx" not in body
    older = re.search(r'href="\?host=algo-1&amp;before=(\d+)" rel="prev"', body)
    assert older is not None
    body = browser.request(f"/console/jobs/training/seeded-00007?host=algo-1"
                           f"&before={older.group(1)}")[2]
    assert "0549699 xxx" in body and "0549400 xxx" in body and "0549999 xxx" not in body
    # Following: the lines after an offset, as JSON.
    status, _, answer = browser.request(
        f"/console/jobs/training/seeded-00007/log?host=algo-1&after={older.group(1)}")
    data = json.loads(answer)
    assert status == 200 and data["lines"][0][1].startswith("0549700 ")
    # The job has ended and these lines reach the end: nothing more will come.
    assert len(data["lines"]) == 300 and data["final"] is True
    data = json.loads(browser.request(
        "/console/jobs/training/seeded-00007/log?host=algo-1&after=0")[2])
    assert data["lines"][-1][1].startswith("0000299 ") and data["final"] is False


# -- every kind in one list ---------------------------------------------------------------------
def test_processing_and_transform_jobs_share_the_list(server: ApiServer,
                                                      browser: Browser,
                                                      tmp_path: Path) -> None:
    from tests.support.jobs import ROLE
    plane = server.plane
    plane.create("processing", {
        "ProcessingJobName": "mixed-processing", "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": FAKE_IMAGE},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600}})
    plane.wait("processing", "mixed-processing", timeout=60)
    body = browser.request("/console/jobs?kind=processing")[2]
    assert "mixed-processing" in body and "1&ndash;1 of 1" in body
    body = browser.request("/console/jobs?size=5")[2]
    assert "mixed-processing" in body  # the newest of every kind, first
    status, _, body = browser.request("/console/jobs/processing/mixed-processing")
    assert status == 200 and "DescribeProcessingJob" in body


def test_deep_links_from_a_job_to_its_model_and_endpoint_and_back(
        server: ApiServer, browser: Browser, tmp_path: Path) -> None:
    from tests.support.jobs import ROLE, training_request
    plane = server.plane
    plane.create("training", training_request("linked-job", tmp_path))
    record = plane.wait("training", "linked-job", timeout=60)
    artifacts = record["ModelArtifacts"]["S3ModelArtifacts"]
    plane.create("model", {"ModelName": "linked-model", "ExecutionRoleArn": ROLE,
                           "PrimaryContainer": {"Image": FAKE_IMAGE,
                                                "ModelDataUrl": artifacts}})
    plane.create("endpoint-config", {"EndpointConfigName": "linked-config",
                                     "ProductionVariants": [{
                                         "VariantName": "AllTraffic",
                                         "ModelName": "linked-model",
                                         "InitialInstanceCount": 1,
                                         "InstanceType": "local"}]})
    plane.create("endpoint", {"EndpointName": "linked-ep",
                              "EndpointConfigName": "linked-config"})
    try:
        body = browser.request("/console/jobs/training/linked-job")[2]
        assert 'href="/console/models/linked-model"' in body
        assert 'href="/console/endpoints/linked-ep"' in body
        body = browser.request("/console/models/linked-model")[2]
        assert 'href="/console/jobs/training/linked-job"' in body
        assert 'href="/console/endpoints/linked-ep"' in body
        body = browser.request("/console/endpoints/linked-ep")[2]
        assert 'href="/console/models/linked-model"' in body
        assert "Try it" in body
    finally:
        plane.delete("endpoint", "linked-ep")


def test_a_long_series_is_thinned_for_its_chart(server: ApiServer, browser: Browser) -> None:
    server.plane.ctx.store.add_metrics("training", "seeded-00011", "algo-1", [
        ("train:loss", 1_700_000_000.0 + i, 1.0 / (i + 1)) for i in range(9_000)])
    status, _, answer = browser.request("/console/jobs/training/seeded-00011/metrics")
    series = json.loads(answer)["series"]["train:loss"]
    assert status == 200 and 1_000 < len(series["x"]) <= 2_001
    assert series["x"][0] == 1_700_000_000.0 and series["x"][-1] == 1_700_008_999.0


@pytest.mark.parametrize("count", [0, 1, 2, 3, 127, 128, 129, 1000, 1024, 1025, 9_999, 123_457])
def test_counting_by_probes_is_exact(count: int) -> None:
    from shipyard.console.listing import _probe_count

    calls = []

    def rows(offset: int, limit: int) -> int:
        calls.append(limit)
        return max(0, min(limit, count - offset))

    assert _probe_count(rows) == count
    assert sum(1 for limit in calls if limit > 1) <= 1  # one read of the last rows at most
    assert len(calls) <= 2 * max(1, count).bit_length() + 2
