"""``shipyard check``: the rules on hand-made image facts, then on real images.

The Docker part builds a correct image and a set of deliberately broken ones
(tests/support/broken_images.py), checks them all side by side with short timeouts, and
asserts that the correct image passes every check and each broken image fails (or, for a
rule SageMaker does not enforce, warns on) exactly the check for the rule it breaks, and no
other.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipyard.check import (
    CHECKS,
    CheckOptions,
    CheckResult,
    Payload,
    Report,
    Stage,
    Status,
    Timeouts,
    render_json,
    render_junit,
    render_table,
    run_checks,
)
from shipyard.check import model as check_model
from shipyard.check.image import ImageConfig
from shipyard.check.layers import FileSystem, ImageFiles, index_layer, read_image, scan_text
from shipyard.check.plan import plan_stages
from shipyard.check.sandbox import Reply
from shipyard.check.serving import says_cannot_load
from shipyard.check.static import (
    ImageFacts,
    check_capability_labels,
    check_entrypoint_exec_form,
    check_entrypoint_no_wrapper,
    check_image_size,
    check_no_credentials_env,
    check_no_credentials_layers,
    check_opt_ml_empty,
    check_user_non_root,
    is_shell_form,
    run_static,
)
from shipyard.cli import cli
from shipyard.cli.check import check as check_command
from tests.support.broken_images import (
    BREAKS,
    WARNS,
    Spec,
    build_check_images,
    fake_credentials,
)
from tests.support.images import ROOT, SESSION_SCOPE

# ---------------------------------------------------------------------------------------
# Hand-made layers and facts

Files = dict[str, Any]  # path -> bytes (file), None (dir), ("link", target), "whiteout"

PASSWD = b"root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/sh\n" \
         b"toor:x:0:0::/root:/bin/sh\n"
BASE: Files = {
    "bin": ("link", "usr/bin"), "usr": None, "usr/bin": None, "usr/local/bin": None,
    "usr/bin/sh": b"\x7fELF", "usr/bin/bash": b"\x7fELF", "usr/bin/python3": b"\x7fELF",
    "etc/passwd": PASSWD,
}


def layer_tar(files: Files, *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, value in files.items():
            parent, _, name = path.rpartition("/")
            if value == "whiteout":
                info = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
                tar.addfile(info, io.BytesIO(b""))
            elif value == "opaque":
                tar.addfile(tarfile.TarInfo(f"{path}/.wh..wh..opq"), io.BytesIO(b""))
            elif value is None:
                info = tarfile.TarInfo(path)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(value, tuple):
                info = tarfile.TarInfo(path)
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(value), 0o755
                tar.addfile(info, io.BytesIO(value))
    data = buf.getvalue()
    return gzip.compress(data) if compress else data


def image_files(*layers: Files) -> ImageFiles:
    indexes = [index_layer(io.BytesIO(layer_tar(files)), f"layer{i}")
               for i, files in enumerate(layers)]
    fs = FileSystem()
    for index in indexes:
        fs.apply(index)
    return ImageFiles(indexes, fs)


def facts(*layers: Files, **config: Any) -> ImageFacts:
    config.setdefault("user", "1000")
    config.setdefault("env", {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    for key in ("entrypoint", "cmd"):
        config[key] = tuple(config.get(key, ()))
    return ImageFacts(ImageConfig(reference="test", id="sha256:test", **config),
                      image_files(BASE, *layers))


TRAIN: Files = {"usr/local/bin/train": b"#!/usr/bin/python3\nimport sys\n"}


def status(result: CheckResult) -> Status:
    return result.status


# ---------------------------------------------------------------------------------------
# Static rules


@pytest.mark.parametrize(("argv", "expected"), [
    (("/bin/sh", "-c", "python train.py"), True),
    (("bash", "-lc", "serve"), True),
    (("/usr/bin/env", "sh", "-c", "train"), True),
    (("python3", "-c", "print()"), False),
    (("bash", "/entrypoint.sh"), False),
    (("train",), False),
])
def test_shell_form_detection(argv: tuple[str, ...], expected: bool) -> None:
    assert is_shell_form(argv) is expected


def test_exec_form_rules() -> None:
    assert status(check_entrypoint_exec_form(facts(TRAIN))) is Status.PASS
    missing = check_entrypoint_exec_form(facts())
    assert missing.status is Status.FAIL and "neither train nor serve" in missing.detail
    shell = check_entrypoint_exec_form(facts(TRAIN, entrypoint=["/bin/sh", "-c", "train"]))
    assert shell.status is Status.FAIL and "shell form" in shell.detail
    # Found through PATH and the /bin -> usr/bin symlink.
    ok = check_entrypoint_exec_form(facts(entrypoint=["/bin/python3", "/opt/program/m.py"]))
    assert ok.status is Status.PASS, ok.detail
    gone = check_entrypoint_exec_form(facts(entrypoint=["/opt/program/run"]))
    assert gone.status is Status.FAIL and "not an executable" in gone.detail


def test_wrapper_rules() -> None:
    tini = {"usr/bin/tini": b"\x7fELF"}
    failed = check_entrypoint_no_wrapper(facts(tini, entrypoint=["/usr/bin/tini", "--"]))
    assert failed.status is Status.FAIL and "tini" in failed.detail
    dumb = check_entrypoint_no_wrapper(
        facts({"usr/bin/dumb-init": b"\x7fELF"}, entrypoint=["/usr/bin/env", "dumb-init", "x"]))
    assert dumb.status is Status.FAIL
    # A sh -c entry point is the exec-form check's failure, not this one's.
    assert status(check_entrypoint_no_wrapper(
        facts(entrypoint=["/bin/sh", "-c", "train"]))) is Status.PASS
    script = {"entry.sh": b"#!/bin/sh\nset -e\nprepare\npython3 /opt/program/m.py\n"}
    warned = check_entrypoint_no_wrapper(facts(script, entrypoint=["/entry.sh"]))
    assert warned.status is Status.WARN and "neither execs" in warned.detail
    execs = {"entry.sh": b"#!/bin/bash\nprepare\nexec \"$@\"\n"}
    assert status(check_entrypoint_no_wrapper(
        facts(execs, entrypoint=["bash", "/entry.sh"]))) is Status.PASS
    assert status(check_entrypoint_no_wrapper(
        facts(entrypoint=["python3", "/opt/program/m.py"]))) is Status.PASS


@pytest.mark.parametrize(("user", "expected"), [
    # Root is not against SageMaker's rules: a warning. A user that does not exist is: no
    # container can start.
    ("", Status.WARN), ("root", Status.WARN), ("0", Status.WARN), ("0:0", Status.WARN),
    ("toor", Status.WARN), ("nobody-here", Status.FAIL), ("app", Status.PASS),
    ("1000:1000", Status.PASS), ("4242", Status.PASS),
])
def test_user_rules(user: str, expected: Status) -> None:
    assert check_user_non_root(facts(user=user)).status is expected


def test_opt_ml_rules() -> None:
    baked = check_opt_ml_empty(facts({"opt/ml/model/w.bin": b"w"}))
    assert baked.status is Status.FAIL and "/opt/ml/model/w.bin" in baked.detail
    assert status(check_opt_ml_empty(facts({"opt/ml/model": None}))) is Status.PASS
    # Deleted by a whiteout, or hidden under an opaque directory: not in the filesystem.
    assert status(check_opt_ml_empty(facts(
        {"opt/ml/model/w.bin": b"w"}, {"opt/ml": "whiteout"}))) is Status.PASS
    assert status(check_opt_ml_empty(facts(
        {"opt/ml/model/w.bin": b"w"}, {"opt/ml": "opaque"}))) is Status.PASS


def test_credentials_in_env() -> None:
    key = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert status(check_no_credentials_env(facts(env={"AWS_SECRET_ACCESS_KEY": "x"}))) \
        is Status.FAIL
    hidden = check_no_credentials_env(facts(env={"DEPLOY": f"id={key}"}))
    assert hidden.status is Status.FAIL and key not in hidden.detail  # masked
    assert status(check_no_credentials_env(facts(env={
        "DOC": "AKIA" + "IOSFODNN7EXAMPLE", "AWS_REGION": "eu-west-1"}))) is Status.PASS


def test_credentials_in_layers() -> None:
    leaked = facts({"home/app/.aws/credentials": fake_credentials().encode()},
                   {"home/app/.aws": "whiteout"})
    result = check_no_credentials_layers(leaked)
    assert result.status is Status.FAIL
    assert "deleted by a later layer" in result.detail and "layer 2/3" in result.detail
    assert "AWS access key id" in result.detail and "AWS secret access key" in result.detail
    code = b"def client(aws_access_key_id=None, aws_secret_access_key=None):\n" \
           b"    key = 'AKIAIOSFODNN7EXAMPLE'\n"
    assert status(check_no_credentials_layers(facts({"lib/botocore.py": code}))) is Status.PASS


def test_secret_split_across_scan_chunks() -> None:
    # A key straddling the scanner's 1 MiB chunk boundary is still found.
    from shipyard.check import layers

    key = ("AKIA" + "QRSTUVWXYZ234567").encode()
    data = b"x" * (layers.SCAN_CHUNK - 7) + b" " + key + b" tail"
    index = index_layer(io.BytesIO(layer_tar({"big.bin": data})))
    assert [f.kind for f in index.secrets] == ["AWS access key id"]
    assert scan_text("f", b"aws_secret_access_key: " + b"A" * 40) != []
    assert scan_text("f", b"aws_secret_access_key: " + b"A" * 39) == []


def test_capability_labels_and_size() -> None:
    label = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
    assert status(check_capability_labels(facts(labels={label: "True"}))) is Status.FAIL
    serve = {"usr/local/bin/serve": b"#!/usr/bin/python3\n"}
    assert status(check_capability_labels(facts(serve, labels={label: "true"}))) is Status.PASS
    # Labelled for serving, but `docker run IMAGE serve` cannot start a server.
    no_serve = check_capability_labels(facts(TRAIN, labels={label: "true"}))
    assert no_serve.status is Status.FAIL and "no serve on PATH" in no_serve.detail
    assert status(check_capability_labels(
        facts(serve, entrypoint=["train"], labels={label: "true"}))) is Status.FAIL
    big = facts(size=3 * 1000**3)
    assert status(check_image_size(big, max_bytes=2 * 1000**3)) is Status.WARN
    assert status(check_image_size(big)) is Status.PASS
    assert [r.check.id for r in run_static(facts(TRAIN))] == [
        c.id for c in CHECKS.values() if c.stage is Stage.STATIC]


def test_symlinks_and_whiteouts() -> None:
    fs = image_files(BASE, {"usr/lib": None, "usr/lib/x": b"x", "lib": ("link", "usr/lib"),
                            "usr/bin/up": ("link", "../lib/x"), "loop": ("link", "loop")},
                     {"usr/lib/x": "whiteout"}).filesystem
    assert fs.resolve("bin/sh") == "usr/bin/sh"
    assert fs.get("lib/x") is None and fs.resolve("usr/bin/up") is None
    assert fs.resolve("loop") is None
    assert fs.which("python3", ["/usr/local/bin", "/bin"]) == "/bin/python3"


def _save_tar(layers: list[bytes], *, oci: bool) -> bytes:
    """A ``docker save`` stream: members out of layer order, manifest last."""
    buf = io.BytesIO()
    # Names are content addresses (layer indexes are cached by them): unique per content.
    digests = [hashlib.sha256(data).hexdigest() for data in layers]
    names = [f"blobs/sha256/{d}" if oci else f"{d}/layer.tar" for d in digests]
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        if oci:
            add(f"blobs/sha256/{'c' * 64}", b'{"config": {}}')  # a blob that is not a layer
        for name, data in reversed(list(zip(names, layers, strict=True))):
            add(name, data)
        add("manifest.json", json.dumps([{"Layers": names}]).encode())
    data = buf.getvalue()
    return data


@pytest.mark.parametrize("oci", [False, True], ids=["legacy", "oci"])
def test_read_image_stacks_layers_in_manifest_order(oci: bool) -> None:
    layers = [layer_tar({"a": b"1", "b": b"1"}), layer_tar({"a": "whiteout", "c": b"2"},
                                                           compress=oci)]
    stream = _save_tar(layers, oci=oci)
    files = read_image(iter([stream[i:i + 1000] for i in range(0, len(stream), 1000)]))
    assert [len(layer.entries) for layer in files.layers] == [2, 1]
    assert sorted(e.path for e in files.filesystem.under("")) == ["b", "c"]


# ---------------------------------------------------------------------------------------
# Plans, reports, docs


def _config(**kw: Any) -> ImageConfig:
    kw.setdefault("env", {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    for key in ("entrypoint", "cmd"):
        kw[key] = tuple(kw.get(key, ()))
    return ImageConfig(reference="x", id="sha256:x", **kw)


def test_plan_stages() -> None:
    fs = image_files(BASE, TRAIN).filesystem
    inferred = plan_stages(_config(), fs, CheckOptions())
    assert inferred[Stage.TRAIN].run and not inferred[Stage.SERVE].run
    assert "no serve on PATH" in inferred[Stage.SERVE].why
    built = plan_stages(_config(entrypoint=["shipyard-entry"], labels={
        "org.shipyard.build.recipe": "cpu", "org.shipyard.build.serve": "inference.py"}),
        None, CheckOptions())
    assert not built[Stage.TRAIN].run and built[Stage.SERVE].run
    asked = plan_stages(_config(), fs, CheckOptions(serve=True))
    assert not asked[Stage.TRAIN].run and asked[Stage.TRAIN].why == "not asked (only --serve)"
    opaque = plan_stages(_config(entrypoint=["python3", "m.py"]), fs, CheckOptions())
    assert not opaque[Stage.TRAIN].run and "pass --train" in opaque[Stage.TRAIN].why
    assert plan_stages(_config(entrypoint=["train"]), fs, CheckOptions())[Stage.TRAIN].run
    static = plan_stages(_config(), fs, CheckOptions(static_only=True))
    assert not any(p.run for p in static.values())


def _report() -> Report:
    results = tuple(CheckResult(info, Status.PASS, "fine") for info in CHECKS.values())
    results = (CheckResult(check_model.OPT_ML_EMPTY, Status.FAIL, "baked: /opt/ml/w.bin"),
               CheckResult(check_model.IMAGE_SIZE, Status.WARN, "big"),
               CheckResult(check_model.PROCESS_OUTPUTS, Status.SKIP, "not asked"),
               *results[:3])
    return Report("img:1", "sha256:abc", results, 1.5)


def test_reporters() -> None:
    report = _report()
    suites = ET.fromstring(render_junit(report))
    suite = suites.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "1", "1")
    failure = suite.find("testcase[@name='opt-ml-empty']/failure")
    assert failure is not None and failure.get("message") == "baked: /opt/ml/w.bin"
    assert "How to fix: Put code and assets elsewhere" in (failure.text or "")
    assert suite.find("testcase[@name='process-outputs']/skipped") is not None
    table = render_table(report, width=80)
    assert re.search(r"opt-ml-empty\s+FAIL\s+baked: /opt/ml/w.bin", table)
    assert "fix: Put code and assets" in table and "1 failed, 1 warned, 1 skipped" in table
    assert json.loads(render_json(report))["passed"] is False


@pytest.mark.parametrize(("reply", "cannot_load"), [
    # The toolkit's /invocations once model_fn failed, and what it says meanwhile.
    (Reply(503, b'{"code": 503, "message": "model failed to load: [Errno 2] No such file"}'),
     True),
    (Reply(503, b'{"code": 503, "message": "model is loading"}'), False),
    # The toolkit's /ping in both cases, a plain 503, a hand-written "not loaded".
    (Reply(503, b'{"status": "Unhealthy"}'), False),
    (Reply(503), False),
    (Reply(503, b'{"error": "model not loaded"}'), False),
    (Reply(500, b"Failed to load model weights: out of memory"), True),
    # A refused request that mentions loading is about the request, not the model.
    (Reply(400, b"model failed to load the request body"), False),
    (Reply(0, error="ConnectionRefusedError"), False),
], ids=["failed", "loading", "unhealthy", "bare", "not-loaded", "other-wording", "4xx", "none"])
def test_says_cannot_load(reply: Reply, cannot_load: bool) -> None:
    assert says_cannot_load(reply) is cannot_load


def test_every_check_is_documented_with_its_rule() -> None:
    doc = (ROOT / "docs" / "check.md").read_text()
    for info in CHECKS.values():
        assert f"### `{info.id}`" in doc, info.id
        assert info.rule and info.fix and info.title


# ---------------------------------------------------------------------------------------
# Real images

FAST = Timeouts(train=30, stop_grace=3, sigterm_after=2, health=20, ping=2, invocation=10,
                serve_grace=10, process=30)
TIMEOUT_FLAGS = ["--train-timeout", "30", "--stop-grace", "3", "--sigterm-after", "2",
                 "--health-timeout", "20", "--invocation-timeout", "10", "--serve-grace", "10",
                 "--process-timeout", "30"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("check-fixtures")
    (root / "model").mkdir()
    (root / "model" / "model.json").write_text('{"mean": 2.0}')
    (root / "in").mkdir()
    (root / "in" / "rows.csv").write_text("1,2\n3,4\n")
    (root / "payload.json").write_text('{"x": [1, 2]}')
    (root / "slow.json").write_text('"slow"')
    return {name: root / name for name in ("model", "in", "payload.json", "slow.json")} | {
        "root": root}


def _options(spec: Spec, fixtures: dict[str, Path]) -> CheckOptions:
    return CheckOptions(
        train=True if "train" in spec.stages else None,
        serve=True if "serve" in spec.stages else None,
        model=fixtures["model"], hyperparameters={"sleep": "0"},
        slow_hyperparameters={"sleep": "30"},
        payload=Payload(fixtures["payload.json"].read_bytes()),
        slow_payload=Payload(fixtures["slow.json"].read_bytes()),
        timeouts=FAST, labels={"org.shipyard.scope": SESSION_SCOPE})


@pytest.fixture(scope="module")
def checked(docker_client: Any, base_image: str, fixtures: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every image checked once, side by side: the broken ones through the library, the
    correct one through the CLI (inferred stages, --json and --junit)."""
    built = build_check_images(docker_client)
    junit = tmp_path_factory.mktemp("junit") / "check.xml"
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_checks, tag, _options(spec, fixtures),
                                     client=docker_client)
                   for name, (spec, tag) in built.items() if spec.breaks}
        cli.add_command(check_command)
        result = CliRunner().invoke(cli, [
            "check", built["correct"][1], "--json", "--junit", str(junit),
            "-p", "sleep=0", "--slow-hyperparameter", "sleep=30",
            "--bad-hyperparameter", "learning_rate=-1",
            "--payload", str(fixtures["payload.json"]),
            "--slow-payload", str(fixtures["slow.json"]),
            "--processing-input", f"{fixtures['in']}=/opt/ml/processing/input/data",
            "--processing-output", "/opt/ml/processing/output/result",
            "--processing-entrypoint", "python3 /opt/program/main.py process",
            *TIMEOUT_FLAGS], env={"SHIPYARD_SCOPE": SESSION_SCOPE}, catch_exceptions=False)
        reports = {name: future.result() for name, future in futures.items()}
    return {"built": built, "reports": reports, "cli": result, "junit": junit}


@pytest.mark.docker
def test_correct_image_passes_every_check(checked: dict[str, Any]) -> None:
    result = checked["cli"]
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    statuses = {c["id"]: (c["status"], c["detail"]) for c in report["checks"]}
    assert set(statuses) == set(CHECKS)
    assert {k: v for k, v in statuses.items() if v[0] != "PASS"} == {}
    assert report["passed"] is True and report["counts"]["PASS"] == len(CHECKS)
    # Inferred stages ran (no --train/--serve), the model served is the one trained.
    assert "model.json" in statuses["train-completes"][1]
    assert "learning_rate=-1" in statuses["train-failure-file"][1]
    assert "a request in flight" in statuses["serve-sigterm-drain"][1]
    suite = ET.parse(checked["junit"]).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        str(len(CHECKS)), "0", "0")


@pytest.mark.docker
@pytest.mark.parametrize(("name", "rule", "status"), sorted(
    [(name, rule, Status.FAIL) for name, rule in BREAKS.items()]
    + [(name, rule, Status.WARN) for name, rule in WARNS.items()]))
def test_broken_image_breaks_exactly_its_rule(name: str, rule: str, status: Status,
                                              checked: dict[str, Any]) -> None:
    spec: Spec = checked["built"][name][0]
    report: Report = checked["reports"][name]
    failed = {r.check.id: r.detail for r in report.with_status(Status.FAIL)}
    warned = {r.check.id: r.detail for r in report.with_status(Status.WARN)}
    assert {Status.FAIL: failed, Status.WARN: warned}[status].keys() == {rule}, (
        failed, warned, report.result(rule).detail)
    assert {Status.FAIL: warned, Status.WARN: failed}[status] == {}
    assert report.failed is (status is Status.FAIL)
    # The stages the image cannot do are skipped with the reason; the rest ran.
    skipped = {r.check.id for r in report.with_status(Status.SKIP)}
    assert "process-outputs" in skipped
    if spec.stages == ("serve",):
        assert {"train-completes", "train-failure-file", "train-sigterm"} <= skipped
        assert report.result("train-completes").detail == "not asked (only --serve)"


@pytest.mark.docker
def test_sigterm_ignored_is_told_from_sigterm_handled(checked: dict[str, Any]) -> None:
    reports: dict[str, Report] = checked["reports"]
    # Ignored, and training outlasts the grace: still running when SIGKILL would come.
    assert "still running 3 s after SIGTERM" in reports["sigterm-ignored"].result(
        "train-sigterm").detail
    # Ignored, but training ends on its own within the grace (AWS's scikit example): the
    # exit in time is not put down to SIGTERM.
    short = reports["sigterm-ignored-short"].result("train-sigterm")
    assert "exited with code 0" in short.detail
    assert "the same run without SIGTERM ended on its own" in short.detail
    assert "--slow-hyperparameter" in short.how_to_fix
    # Handled: the run without SIGTERM was still going.
    correct = json.loads(checked["cli"].output)
    handled = next(c for c in correct["checks"] if c["id"] == "train-sigterm")
    assert "the same run without SIGTERM was still running" in handled["detail"]


@pytest.mark.docker
def test_serve_fails_fast_when_the_model_cannot_load(checked: dict[str, Any], docker_client: Any,
                                                     fixtures: dict[str, Path]) -> None:
    """No model: the toolkit's model_fn fails, /ping stays 503, and the check says so in
    seconds rather than after the 240 s health-check time. A server whose /ping is a bare 503
    through a slow load is still waited for."""
    timeouts = replace(FAST, health=240)
    labels = {"org.shipyard.scope": SESSION_SCOPE}
    no_model = CheckOptions(serve=True, timeouts=timeouts, labels=labels)
    # The honest hand-written server (the wrong-port image's), made to load for 6 s.
    slow_load = CheckOptions(serve=True, timeouts=timeouts, labels=labels,
                             env={"LOAD_SECONDS": "6"}, skip=frozenset({"serve-bind-to-port"}),
                             payload=Payload(fixtures["payload.json"].read_bytes()))
    built = checked["built"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failing = pool.submit(run_checks, built["correct"][1], no_model, client=docker_client)
        waiting = pool.submit(run_checks, built["wrong-port"][1], slow_load,
                              client=docker_client)
        report, slow = failing.result(), waiting.result()

    # The whole run includes reading the image's layers (tens of seconds on a busy machine);
    # the servers were given up on seconds after they started.
    assert report.seconds < 120, report.seconds
    for check_id in ("serve-ping-ready", "serve-bind-to-port"):
        result = report.result(check_id)
        assert result.status is Status.FAIL, result.detail
        assert "the model cannot load: /invocations answered HTTP 503" in result.detail
        after = re.search(r"([\d.]+) s after start", result.detail)
        assert after is not None and float(after.group(1)) < 30, result.detail
        assert "model failed to load" in result.detail
        assert "model served: an empty /opt/ml/model" in result.detail
        assert "--model DIR|FILE.tar.gz" in result.how_to_fix
        assert "--channel NAME=DIR" in result.how_to_fix
    assert report.result("serve-invocations").status is Status.SKIP

    ready = slow.result("serve-ping-ready")
    assert ready.status is Status.PASS, ready.detail
    seconds = re.search(r"answered 200 ([\d.]+) s after start", ready.detail)
    assert seconds is not None and float(seconds.group(1)) >= 5.5, ready.detail


@pytest.mark.docker
def test_check_containers_are_removed(checked: dict[str, Any], docker_client: Any) -> None:
    left = docker_client.containers.list(all=True, filters={"label": [
        "org.shipyard.check", f"org.shipyard.scope={SESSION_SCOPE}"]})
    assert left == []


@pytest.mark.docker
def test_cli_table_exit_code_and_junit(checked: dict[str, Any], tmp_path: Path) -> None:
    tag = checked["built"]["opt-ml"][1]
    cli.add_command(check_command)
    junit = tmp_path / "out" / "report.xml"
    junit.parent.mkdir()
    result = CliRunner().invoke(cli, ["check", tag, "--static-only", "--junit", str(junit)],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert re.search(r"opt-ml-empty\s+FAIL\s+1 file\(s\) baked under /opt/ml", result.output)
    assert re.search(r"train-completes\s+SKIP\s+--static-only", result.output)
    assert "fix: Put code and assets elsewhere" in result.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    # Running as root warns, with its fix, and does not fail the exit status.
    root = CliRunner().invoke(cli, ["check", checked["built"]["root"][1], "--static-only"],
                              catch_exceptions=False)
    assert root.exit_code == 0, root.output
    assert re.search(r"user-non-root\s+WARN\s+no USER", root.output)
    assert "fix: Create a user" in root.output
    # Warnings fail only with --strict; an unknown check id or image is a usage error.
    strict = CliRunner().invoke(cli, ["check", checked["built"]["correct"][1], "--static-only",
                                      "--max-size-gb", "0.01", "--strict"])
    assert strict.exit_code == 1 and re.search(r"image-size\s+WARN", strict.output)
    assert CliRunner().invoke(cli, ["check", tag, "--skip", "nope"]).exit_code == 2
    missing = CliRunner().invoke(cli, ["check", "shipyard-test/no-such-image:0"])
    assert missing.exit_code == 3 and "not in the local Docker engine" in missing.output
