"""The web console over HTTP, without a browser: access (login, one-time links, sessions,
CSRF), the merged job list's paging over 10,000 jobs, and the package's files.

A real API server in a thread, real HTTP (urllib); the jobs are records the control plane's
own code builds, written through its store. The browser tests are tests/test_console_browser.py.
"""

from __future__ import annotations

import contextlib
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
from tests.support import s3server
from tests.support.console import seed_training_jobs
from tests.support.jobs import FAKE_IMAGE

s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket

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


# -- a job's artifacts ----------------------------------------------------------------------------
def _download_link(body: str, kind: str) -> str:
    found = re.search(rf'href="([^"]+)"[^>]*data-artifact="{kind}"', body)
    assert found is not None, body[:3000]
    return found.group(1).replace("&amp;", "&")


def _download(browser: Browser, job: str, uri: str) -> tuple[int, dict[str, str], bytes]:
    """The raw answer to a download (bytes, not text)."""
    path = (f"/console/jobs/training/{job}/download?uri="
            + urllib.parse.quote(uri, safe=""))
    request = urllib.request.Request(browser.url + path)
    try:
        with browser.opener.open(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_a_jobs_local_outputs_download_and_nothing_else_does(
        server: ApiServer, browser: Browser, tmp_path: Path) -> None:
    from tests.support.jobs import training_request
    plane = server.plane
    plane.create("training", training_request("files-job", tmp_path))
    record = plane.wait("training", "files-job", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    artifact = record["ModelArtifacts"]["S3ModelArtifacts"]
    model = urllib.request.url2pathname(urllib.parse.urlparse(artifact).path)
    body = browser.request("/console/jobs/training/files-job")[2]
    link = _download_link(body, "download")
    assert urllib.parse.unquote(link.split("uri=", 1)[1]) == artifact
    status, headers, data = _download(browser, "files-job", artifact)
    assert status == 200, data[:500]
    assert headers["content-disposition"] == 'attachment; filename="model.tar.gz"'
    assert headers["content-type"] == "application/octet-stream"
    assert data == Path(model).read_bytes()
    assert int(headers["content-length"]) == len(data)
    # The job's folder lists its files, each downloadable.
    files = browser.request(_download_link(body, "files"))[2]
    assert "output/model.tar.gz" in files and "output/output.tar.gz" in files
    # Its input, a way out of its folder, a link planted in it, another job's output, a
    # system file: refused, and no byte of them sent.
    folder = Path(model).parent
    (tmp_path / "secret.txt").write_text("hush-hush")
    (folder / "planted").symlink_to(tmp_path / "secret.txt")
    other = tmp_path / "out" / "another-job" / "output"
    other.mkdir(parents=True)
    (other / "model.tar.gz").write_text("hush-hush")
    for uri in [(tmp_path / "data" / "part-0.csv").as_uri(),
                folder.as_uri() + "/../../../secret.txt",
                (folder / "planted").as_uri(),
                (other / "model.tar.gz").as_uri(),
                "file:///etc/passwd", "/etc/passwd"]:
        status, _, data = _download(browser, "files-job", uri)
        assert status in (400, 403) and b"hush-hush" not in data and b"root:" not in data, uri
    assert _download(browser, "files-job", folder.as_uri() + "/missing.bin")[0] == 404
    # Without a session: the login form, not the file.
    anonymous = Browser(server.url)
    status, _, text_body = anonymous.request(
        "/console/jobs/training/files-job/download?uri=" + urllib.parse.quote(artifact))
    assert status == 303 and text_body == ""


@pytest.fixture(scope="module")
def s3_console(tmp_path_factory: pytest.TempPathFactory,
               s3_server: s3server.S3Server) -> Iterator[ApiServer]:
    """A console over a plane whose S3 client is the moto server's."""
    data = tmp_path_factory.mktemp("console-s3") / "state"
    settings = Settings.load({
        "data_dir": str(data), "api_port": 0, "s3_endpoint_url": s3_server.url,
        "s3_access_key_id": s3server.ACCESS_KEY,
        "s3_secret_access_key": s3server.SECRET_KEY}, environ={})
    plane = ControlPlane(settings, FakeRuntime(images=[FAKE_IMAGE]))
    api = ApiServer(settings, plane)
    api.start_in_thread()
    try:
        yield api
    finally:
        api.stop()
        plane.close()


def test_s3_artifacts_stream_from_the_store_and_only_the_jobs_own(
        s3_console: ApiServer, s3_server: s3server.S3Server, s3_bucket: str,
        tmp_path: Path) -> None:
    from tests.support.jobs import training_request
    boto = s3_server.boto()
    boto.put_object(Bucket=s3_bucket, Key="in/part-0.csv", Body=b"1,2\n")
    boto.put_object(Bucket=s3_bucket, Key="out/other-job/output/model.tar.gz", Body=b"hush-hush")
    boto.put_object(Bucket=s3_bucket, Key="in/secret.txt", Body=b"hush-hush")
    plane = s3_console.plane
    plane.create("training", training_request(
        "s3-files-job", tmp_path, InputDataConfig=[{"ChannelName": "training", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/in/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{s3_bucket}/out"}))
    record = plane.wait("training", "s3-files-job", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    artifact = record["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{s3_bucket}/out/s3-files-job/output/model.tar.gz"
    # A big object among its outputs: sent in many chunks, as it is read.
    big = bytes(range(256)) * (5 * 4096 + 7)
    boto.put_object(Bucket=s3_bucket, Key="out/s3-files-job/output/big file é.bin", Body=big)
    browser = Browser(s3_console.url)
    browser.login(*s3_console.keys.default)
    body = browser.request("/console/jobs/training/s3-files-job")[2]
    assert urllib.parse.unquote(_download_link(body, "download").split("uri=", 1)[1]) == artifact
    status, headers, data = _download(browser, "s3-files-job", artifact)
    expected = boto.get_object(Bucket=s3_bucket, Key=artifact.split("/", 3)[3])["Body"].read()
    assert (status, data) == (200, expected)
    assert headers["content-disposition"] == 'attachment; filename="model.tar.gz"'
    files = browser.request(_download_link(body, "files"))[2]
    assert "output/model.tar.gz" in files and "big file é.bin" in files
    uri = f"s3://{s3_bucket}/out/s3-files-job/output/big file é.bin"
    status, headers, data = _download(browser, "s3-files-job", uri)
    assert status == 200 and data == big and int(headers["content-length"]) == len(big)
    assert headers["content-disposition"] == (
        "attachment; filename=\"big file _.bin\"; filename*=UTF-8''big%20file%20%C3%A9.bin")
    for refused in (f"s3://{s3_bucket}/in/part-0.csv",
                    f"s3://{s3_bucket}/out/other-job/output/model.tar.gz",
                    f"s3://{s3_bucket}/out/s3-files-job/../other-job/output/model.tar.gz",
                    f"s3://{s3_bucket}/out/s3-files-job-2/x",
                    f"s3://other-{s3_bucket}/out/s3-files-job/output/model.tar.gz"):
        status, _, data = _download(browser, "s3-files-job", refused)
        assert status == 403 and b"hush-hush" not in data, refused
    missing = f"s3://{s3_bucket}/out/s3-files-job/output/nothing"
    assert _download(browser, "s3-files-job", missing)[0] == 404


def test_only_a_jobs_own_output_folders_are_listed(browser: Browser) -> None:
    status, _, body = browser.request(
        "/console/jobs/training/seeded-00003/files?uri="
        + urllib.parse.quote("s3://bench-bucket/xgb/output/"))
    assert status == 403 and "not inside an output location" in body


# -- an endpoint's instances and history ----------------------------------------------------------
@pytest.fixture(scope="module")
def process_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A console over a plane that runs endpoints as processes (no engine needed)."""
    from tests.support.planes import remove_endpoints
    data = tmp_path_factory.mktemp("console-process") / "state"
    settings = Settings.load({"data_dir": str(data), "api_port": 0, "runtime": "process",
                              "stop_grace_seconds": 2}, environ={})
    plane = ControlPlane(settings)
    api = ApiServer(settings, plane)
    api.start_in_thread()
    try:
        yield api
    finally:
        remove_endpoints(plane)
        api.stop()
        plane.close()


def test_an_endpoints_instances_with_their_health_and_its_update_history(
        process_console: ApiServer, tmp_path: Path) -> None:
    from tests.support.jobs import ROLE
    from tests.support.planes import deploy
    from tests.support.workloads import serve_project
    plane = process_console.plane
    record = deploy(plane, "health-ep", str(serve_project(tmp_path / "good")), None, count=2)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    browser = Browser(process_console.url)
    browser.login(*process_console.keys.default)
    body = browser.request("/console/endpoints/health-ep")[2]
    rows = re.findall(r'<tr data-container="([^"]+)">(.*?)</tr>', body, re.S)
    routed = plane.endpoints.routed("health-ep")["AllTraffic"]
    assert sorted(c for c, _ in rows) == sorted(routed) and len(routed) == 2
    for _, row in rows:
        assert "running" in row and 'data-health="routed"' in row
    # An update whose fleet cannot start: the old fleet serves on (rolled back); then one
    # that works; newest first.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "serve").write_text("#!/bin/sh\necho 'no model here' >&2\nexit 3\n")
    (broken / "serve").chmod(0o755)
    for config, image in (("health-broken", broken), ("health-v2", tmp_path / "good")):
        plane.create("model", {"ModelName": f"{config}-model", "ExecutionRoleArn": ROLE,
                               "PrimaryContainer": {"Image": str(image)}})
        plane.create("endpoint-config", {"EndpointConfigName": config, "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": f"{config}-model",
            "InitialInstanceCount": 1, "InstanceType": "local"}]})
        plane.update_endpoint({"EndpointName": "health-ep", "EndpointConfigName": config})
        record = plane.wait_endpoint("health-ep", timeout=60)
        assert record["EndpointStatus"] == "InService"
    history = plane.endpoints.history("health-ep")
    assert [(h["Operation"], h["EndpointConfigName"], h["Outcome"]) for h in history] == [
        ("UpdateEndpoint", "health-v2", "InService"),
        ("UpdateEndpoint", "health-broken", "RolledBack"),
        ("CreateEndpoint", "health-ep-config", "InService")]
    assert history[1]["FailureReason"] and history[0]["Time"] >= history[1]["Time"]
    body = browser.request("/console/endpoints/health-ep")[2]
    outcomes = re.findall(r'<tr data-outcome="([^"]+)">', body)
    assert outcomes == ["InService", "RolledBack", "InService"]
    assert "health-broken" in body and history[1]["FailureReason"][:40] in body.replace(
        "&#39;", "'")
    rows = re.findall(r'<tr data-container="([^"]+)">(.*?)</tr>', body, re.S)
    assert [c for c, row in rows if 'data-health="routed"' in row] == \
        plane.endpoints.routed("health-ep")["AllTraffic"]


@pytest.mark.parametrize(("state", "said", "tone"), [
    (None, "gone", "muted"),
    ({"running": True}, "running", "ok"),
    ({"running": True, "waiting": "no node has 4 CPUs free", "node": "w1"},
     "waiting: no node has 4 CPUs free", "warning"),
    ({"running": False, "exit_code": 3}, "exited with code 3", "bad"),
    ({"running": False, "exit_code": 137, "oom_killed": True},
     "exited with code 137 (out of memory)", "bad"),
], ids=["gone", "running", "waiting", "exited", "oom"])
def test_an_instances_state_in_words(state: dict[str, Any] | None, said: str,
                                     tone: str) -> None:
    from shipyard.console.endpoints import _state
    from shipyard.runtimes.base import ContainerState
    found = None if state is None else ContainerState(name="c", **state)
    assert _state(found) == (said, tone)


# -- the capacity queue ---------------------------------------------------------------------------
def test_home_shows_the_queue_in_order_where_the_ledger_is_on(
        tmp_path: Path, browser: Browser) -> None:
    from shipyard.control import capacity
    assert 'id="queue"' not in browser.request("/console/")[2]  # no ledger on that plane
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "api_port": 0,
                              "capacity_cpus": 2, "capacity_memory_mb": 16384}, environ={})
    plane = ControlPlane(settings, FakeRuntime(images=[FAKE_IMAGE]))
    api = ApiServer(settings, plane)
    api.start_in_thread()
    try:
        totals = capacity.totals_for(plane.ctx)
        assert totals is not None
        for name in ("queue-first", "queue-second", "queue-third"):
            demand = capacity.demand_for("ml.m5.4xlarge", 1, totals, 1.0)
            plane.ctx.capacity.request("training", name, "", demand, totals)
        client = Browser(api.url)
        client.login(*api.keys.default)
        body = client.request("/console/")[2]
        card = body[body.index('id="queue"'):]
        held = re.findall(r'<tr data-queue="held">.*?>(queue-\w+)</a>', card)
        waiting = re.findall(r'<tr data-queue="waiting">.*?waits #(\d).*?>(queue-\w+)</a>', card)
        assert held == ["queue-first"]
        assert waiting == [("1", "queue-second"), ("2", "queue-third")]
        assert 'href="/console/jobs/training/queue-first"' in card
        assert "1 holding, 2 waiting" in card
        assert 'id="queue"' in client.request("/console/?fragment=1")[2]  # polled too
    finally:
        api.stop()
        plane.close()


def test_a_download_stops_reading_when_the_client_goes_away(
        server: ApiServer, browser: Browser, tmp_path: Path) -> None:
    import http.client
    import os

    from tests.support.jobs import training_request
    plane = server.plane
    plane.create("training", training_request("big-files-job", tmp_path))
    record = plane.wait("training", "big-files-job", timeout=60)
    folder = tmp_path / "out" / "big-files-job" / "output"
    assert record["TrainingJobStatus"] == "Completed" and folder.is_dir()
    big = folder / "big.bin"
    with big.open("wb") as sparse:  # 16 GiB that take no disk
        sparse.truncate(16 * 1024 ** 3)

    def open_on_it() -> bool:
        for fd in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(big):
                    return True
        return False

    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/console/jobs/training/big-files-job/download?uri="
                 + urllib.parse.quote(big.as_uri()), headers={"Cookie": cookie})
    response = conn.getresponse()
    assert response.status == 200
    try:
        assert int(response.getheader("content-length") or 0) == 16 * 1024 ** 3
        assert response.read(1024 * 1024) == bytes(1024 * 1024)
        assert open_on_it()
        conn.close()
        deadline = time.monotonic() + 10
        while open_on_it():
            assert time.monotonic() < deadline, "the file is still being read"
            time.sleep(0.05)
    finally:
        conn.close()
        big.unlink()
