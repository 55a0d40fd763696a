"""Serving ``POST /invocations``: Shipyard's ``serve`` against the classic SageMaker stack.

A SageMaker endpoint container answers ``GET /ping`` and ``POST /invocations`` on port 8080
(AWS "Use Your Own Inference Code with Hosting Services"; reference 4.1). The classic way to
build one is AWS's bring-your-own-container example: nginx -> gunicorn (gevent) -> Flask. The
floor for a Python server is uvicorn + Starlette. This script runs, in the same run, on
127.0.0.1, with 2 workers each (the machine's cores):

- ``a_byoc``: nginx + gunicorn(gevent) + Flask, launched by the anchors' own ``a_byoc/serve.py``;
- ``c_uvicorn``: uvicorn (uvloop, httptools) + Starlette, the anchors' ``c_raw/app_starlette.py``;
- ``shipyard``: ``serve`` from this repository's venv, with a user ``code/inference.py`` holding
  ``model_fn``/``input_fn``/``predict_fn``/``output_fn`` (``{"instances": [[1,2,3,4]]}`` ->
  ``{"predictions": [10.0]}``).

Per stack and round (each stack launched fresh, rounds rotate the order): cold start (spawn ->
first 200 from ``/invocations`` with the right body), wrk warm-up (discarded), wrk at 1 and at
64 connections (req/s, p50, p99), the server's CPU per request (utime + stime of every process
in its session, from ``/proc``, over the wrk window, divided by the requests) and its memory
(PSS, or RSS where the kernel has no ``smaps_rollup``, summed over the session, sampled during
the 64-connection run). Targets: c64 req/s >= 3.5x the classic stack's, <= 150 us of server
CPU per request, cold start <= 0.5 s, memory <= the classic stack's.

Run from the repository root::

    .venv/bin/python benchmarks/serve_invocations.py [--duration 10] [--rounds 1]

It installs nothing. It needs nginx and wrk on PATH and the competitors' venvs under
``/tmp/perf`` (``venv-a``: flask, gunicorn, gevent; ``venv-c``: starlette, uvicorn[standard]),
built by ``bash ../shared/bench-anchors/setup.sh`` (as root); it says so when they are missing.
Every server runs in its own session (process group); at the end, always, only those groups
are stopped (SIGTERM, SIGKILL after 10 s). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_invocations.json"
ANCHORS = Path(os.environ.get("BENCH_ANCHORS", str(ROOT.parent / "shared" / "bench-anchors")))
PERF = Path(os.environ.get("PERF_DIR", "/tmp/perf"))
SETUP_HINT = "bash ../shared/bench-anchors/setup.sh   # as root, from the repository root"
WORKERS = 2
BODY = b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}'
EXPECT = {"predictions": [10.0]}
CLK = os.sysconf("SC_CLK_TCK")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WARMUP_S = 3
COLD_TIMEOUT_S = 60.0

TARGET_RPS_RATIO = 3.5
TARGET_CPU_US = 150.0
TARGET_COLD_S = 0.5

#: The user module for Shipyard's ``serve``: AWS's handler pattern, the same semantics as the
#: anchors' ``b_toolkit/inference.py`` (what a sagemaker-inference user would bring).
INFERENCE_PY = '''\
"""Trivial model: the sum of each row."""
import json


def model_fn(model_dir):
    return lambda rows: [float(sum(r)) for r in rows]


def input_fn(input_data, content_type):
    if content_type != "application/json":
        raise ValueError("unsupported content type: %s" % content_type)
    return json.loads(input_data)["instances"]


def predict_fn(data, model):
    return model(data)


def output_fn(prediction, accept):
    return json.dumps({"predictions": prediction}), "application/json"
'''


# -- stacks ------------------------------------------------------------------------------------
@dataclass
class Spec:
    """How to start one stack: its command, environment and port."""

    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


def free_port() -> int:
    """A port nothing listens on now (the OS's pick), so parallel runs do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec_a_byoc(scratch: Path) -> Spec:
    run = scratch / "a_byoc"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    venv = PERF / "venv-a"
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:{BASE_PATH}", "RUN_DIR": str(run), "PORT": str(port),
           "MODEL_SERVER_WORKERS": str(WORKERS), "WORKER_CLASS": "gevent"}
    return Spec([str(venv / "bin" / "python"), str(ANCHORS / "a_byoc" / "serve.py")], env, run,
                port)


def spec_uvicorn(scratch: Path) -> Spec:
    run = scratch / "c_uvicorn"
    run.mkdir(parents=True, exist_ok=True)
    venv = PERF / "venv-c"
    port = free_port()
    cmd = [str(venv / "bin" / "uvicorn"), "app_starlette:app", "--app-dir",
           str(ANCHORS / "c_raw"), "--host", "127.0.0.1", "--port", str(port), "--workers",
           str(WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "warning"]
    return Spec(cmd, {"PATH": f"{venv / 'bin'}:{BASE_PATH}"}, run, port)


def spec_shipyard(scratch: Path) -> Spec:
    base = scratch / "shipyard" / "ml"
    code = base / "model" / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "inference.py").write_text(INFERENCE_PY)
    port = free_port()
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:{BASE_PATH}", "SAGEMAKER_BASE_DIR": str(base),
           "SAGEMAKER_BIND_TO_PORT": str(port), "SHIPYARD_SERVE_HOST": "127.0.0.1",
           "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS)}
    return Spec([str(bindir / "serve")], env, scratch / "shipyard", port)


STACKS: dict[str, tuple[str, Callable[[Path], Spec]]] = {
    "a_byoc": ("classic: nginx + gunicorn(gevent) + Flask", spec_a_byoc),
    "c_uvicorn": ("uvicorn(uvloop, httptools) + Starlette", spec_uvicorn),
    "shipyard": ("Shipyard `serve`", spec_shipyard),
}


# -- prerequisites -----------------------------------------------------------------------------
def missing_prerequisites() -> list[str]:
    """What this run needs but does not find; it installs none of it."""
    missing = [f"{tool} on PATH" for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    needed = {
        PERF / "venv-a" / "bin" / "gunicorn": "venv-a (flask, gunicorn, gevent)",
        PERF / "venv-c" / "bin" / "uvicorn": "venv-c (starlette, uvicorn[standard])",
    }
    missing += [f"{what}: {path}" for path, what in needed.items() if not path.exists()]
    for name in ("flask", "gevent"):
        if not list((PERF / "venv-a" / "lib").glob(f"python*/site-packages/{name}")):
            missing.append(f"{name} in {PERF / 'venv-a'}")
    if not list((PERF / "venv-c" / "lib").glob("python*/site-packages/starlette")):
        missing.append(f"starlette in {PERF / 'venv-c'}")
    for path in (ANCHORS / "a_byoc" / "serve.py", ANCHORS / "c_raw" / "app_starlette.py",
                 ANCHORS / "post.lua", Path(sys.executable).parent / "serve"):
        if not path.exists():
            missing.append(str(path))
    return missing


# -- /proc -------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session, utime + stime ticks) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[3]), int(rest[11]) + int(rest[12])


def tree_pids(root: int) -> list[int]:
    """The server's processes: its session (it is the leader) plus any descendant elsewhere."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                table[int(entry)] = st
    found = {pid for pid, st in table.items() if st[2] == root}
    if root in table:
        found.add(root)
    grew = True
    while grew:
        extra = {pid for pid, st in table.items() if st[1] in found and pid not in found}
        found |= extra
        grew = bool(extra)
    return sorted(found)


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += st[3]
    return total


def machine_busy_ticks() -> int:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def memory_kb(pids: list[int]) -> tuple[int, int | None]:
    """(sum of VmRSS, sum of Pss or None where ``smaps_rollup`` is missing), in KiB."""
    rss, pss, have_pss = 0, 0, True
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            have_pss = False
    return rss, (pss if have_pss else None)


# -- HTTP and process control ------------------------------------------------------------------
def invoke(port: int, timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body=BODY,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_first_answer(proc: subprocess.Popen[bytes], port: int, t0: float) -> float:
    """Seconds from spawn to the first 200 from /invocations carrying the expected body."""
    while True:
        if time.monotonic() - t0 > COLD_TIMEOUT_S:
            raise RuntimeError(f"no correct /invocations answer in {COLD_TIMEOUT_S:.0f} s")
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            status, body = invoke(port)
        except (OSError, http.client.HTTPException):
            status, body = 0, b""
        if status == 200:
            if json.loads(body) != EXPECT:
                raise RuntimeError(f"wrong answer: {body!r}")
            return time.monotonic() - t0
        time.sleep(0.005)


def stop_group(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGTERM the server's process group (SIGKILL after 10 s); returns pids still left."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc.poll()
        if not tree_pids(pgid):
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return tree_pids(pgid)


# -- wrk ---------------------------------------------------------------------------------------
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _latency_ms(token: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", token)
    if match is None:
        raise ValueError(f"latency {token!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms), requests, non-2xx and socket errors from wrk --latency output."""
    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, out, re.M)

    rps = find(r"Requests/sec:\s+([\d.]+)")
    total = find(r"(\d+) requests in")
    if rps is None or total is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    result: dict[str, Any] = {"rps": float(rps.group(1)), "requests": int(total.group(1))}
    for pct in ("50", "99"):
        m = find(rf"^\s+{pct}%\s+(\S+)")
        result[f"p{pct}_ms"] = _latency_ms(m.group(1)) if m else None
    non2xx = find(r"Non-2xx or 3xx responses:\s+(\d+)")
    sock = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    result["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0)
    return result


def run_wrk(port: int, root: int, conns: int, duration: int,
            sample_memory: bool = False) -> dict[str, Any]:
    """One wrk window; adds the server's CPU per request and, if asked, its peak memory."""
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
           "--latency", "-s", str(ANCHORS / "post.lua"), f"http://127.0.0.1:{port}/invocations"]
    pids = tree_pids(root)
    samples: list[tuple[int, int | None]] = []
    done = threading.Event()

    def sampler() -> None:
        # memory under load: sample while wrk runs, keep the largest
        while not done.wait(max(0.5, duration / 5)):
            samples.append(memory_kb(tree_pids(root)))

    thread = threading.Thread(target=sampler, daemon=True) if sample_memory else None
    s0, b0, t0 = cpu_ticks(pids), machine_busy_ticks(), time.monotonic()
    if thread is not None:
        thread.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    wall = time.monotonic() - t0
    # pids from the start of the window: a worker spawned mid-window would count from zero
    s1, b1 = cpu_ticks(sorted(set(pids) | set(tree_pids(root)))), machine_busy_ticks()
    done.set()
    if thread is not None:
        thread.join()
    result = parse_wrk(out)
    server_s = (s1 - s0) / CLK
    wrk_s = usage.ru_utime + usage.ru_stime
    result.update(
        wall_s=round(wall, 3),
        server_cpu_s=round(server_s, 3),
        cpu_us_per_req=round(server_s * 1e6 / max(1, result["requests"]), 1),
        server_cores=round(server_s / wall, 2),
        wrk_cores=round(wrk_s / wall, 2),
        foreign_cores=round(max(0.0, (b1 - b0) / CLK - server_s - wrk_s) / wall, 2),
    )
    if samples:
        result["rss_kb"] = max(s[0] for s in samples)
        pss = [s[1] for s in samples if s[1] is not None]
        result["pss_kb"] = max(pss) if len(pss) == len(samples) else None
        result["nprocs"] = len(tree_pids(root))
    return result


# -- one measurement ---------------------------------------------------------------------------
@dataclass
class Measurement:
    """One stack, launched fresh and measured once."""

    stack: str
    round: int
    cold_s: float | None = None
    c1: dict[str, Any] = field(default_factory=dict)
    c64: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: str | None = None
    left_over: list[int] = field(default_factory=list)


def measure(name: str, rnd: int, scratch: Path, duration: int,
            started: list[subprocess.Popen[bytes]]) -> Measurement:
    spec = STACKS[name][1](scratch)
    log = spec.cwd / f"{name}-{rnd}.log"
    res = Measurement(name, rnd)
    with open(log, "wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen(spec.cmd, env=spec.env, cwd=spec.cwd, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        started.append(proc)
        try:
            res.cold_s = round(wait_first_answer(proc, spec.port, t0), 4)
            run_wrk(spec.port, proc.pid, 64, WARMUP_S)  # warm-up, discarded
            res.c1 = run_wrk(spec.port, proc.pid, 1, duration)
            res.c64 = run_wrk(spec.port, proc.pid, 64, duration, sample_memory=True)
        except (RuntimeError, OSError, ValueError) as exc:
            res.error = str(exc)
        finally:
            res.left_over = stop_group(proc)
            started.remove(proc)
    if res.error:
        # the server's own output, plus nginx's error log for the classic stack
        tails = [f"== {path.name}\n{path.read_text(errors='replace')[-1500:]}"
                 for path in sorted(spec.cwd.glob("*.log")) if "access" not in path.name]
        res.log_tail = "\n".join(tails)
    return res


# -- report ------------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[Measurement]) -> dict[str, dict[str, Any]]:
    """Median over rounds of each figure, per stack (errored rounds left out)."""
    rows: dict[str, dict[str, Any]] = {}
    for name in STACKS:
        ok = [r for r in runs if r.stack == name and r.error is None]
        if not ok:
            continue

        def med(get: Callable[[Measurement], float | None], rs: list[Measurement] = ok
                ) -> float | None:
            return _median([get(r) for r in rs])

        pss = med(lambda r: r.c64["pss_kb"] / 1024 if r.c64.get("pss_kb") is not None else None)
        rows[name] = {
            "rounds": len(ok),
            "cold_s": med(lambda r: r.cold_s),
            "c1_rps": med(lambda r: r.c1["rps"]),
            "c1_p50_ms": med(lambda r: r.c1["p50_ms"]),
            "c1_cpu_us": med(lambda r: r.c1["cpu_us_per_req"]),
            "c64_rps": med(lambda r: r.c64["rps"]),
            "c64_p50_ms": med(lambda r: r.c64["p50_ms"]),
            "c64_p99_ms": med(lambda r: r.c64["p99_ms"]),
            "c64_cpu_us": med(lambda r: r.c64["cpu_us_per_req"]),
            "rss_mib": med(lambda r: r.c64["rss_kb"] / 1024),
            "pss_mib": pss,
            "nprocs": med(lambda r: r.c64["nprocs"]),
            "errors": sum(r.c1["errors"] + r.c64["errors"] for r in ok),
            "foreign_cores_max": max(max(r.c1["foreign_cores"], r.c64["foreign_cores"])
                                     for r in ok),
        }
    return rows


def verdicts(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The four targets for Shipyard, each with its figure, its bound and PASS/FAIL."""
    ship, classic = rows.get("shipyard"), rows.get("a_byoc")
    out: dict[str, dict[str, Any]] = {}
    if ship is None:
        return out
    mem_key = "pss_mib" if ship["pss_mib"] is not None and (
        classic is None or classic["pss_mib"] is not None) else "rss_mib"
    if classic is not None and classic["c64_rps"]:
        ratio = ship["c64_rps"] / classic["c64_rps"]
        out["c64_rps_vs_classic"] = {"value": round(ratio, 2), "target": f">= {TARGET_RPS_RATIO}x",
                                     "pass": ratio >= TARGET_RPS_RATIO}
    out["cpu_us_per_request_c64"] = {"value": round(ship["c64_cpu_us"], 1),
                                     "target": f"<= {TARGET_CPU_US:g} us",
                                     "pass": ship["c64_cpu_us"] <= TARGET_CPU_US}
    out["cold_start_s"] = {"value": round(ship["cold_s"], 3), "target": f"<= {TARGET_COLD_S} s",
                           "pass": ship["cold_s"] <= TARGET_COLD_S}
    if classic is not None:
        out[f"memory_{mem_key}"] = {
            "value": round(ship[mem_key], 1), "target": f"<= classic ({classic[mem_key]:.1f})",
            "pass": ship[mem_key] <= classic[mem_key]}
    return out


def print_table(rows: dict[str, dict[str, Any]], checks: dict[str, dict[str, Any]]) -> None:
    def fmt(v: float | None, digits: int = 0) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    lines: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("c64 req/s", lambda r: fmt(r["c64_rps"])),
        ("c64 p50 / p99 ms", lambda r: f"{fmt(r['c64_p50_ms'], 2)} / {fmt(r['c64_p99_ms'], 2)}"),
        ("c1 req/s", lambda r: fmt(r["c1_rps"])),
        ("c1 p50 ms", lambda r: fmt(r["c1_p50_ms"], 3)),
        ("server CPU us/req c64 (c1)",
         lambda r: f"{fmt(r['c64_cpu_us'])} ({fmt(r['c1_cpu_us'])})"),
        ("memory PSS (RSS) MiB", lambda r: f"{fmt(r['pss_mib'], 1)} ({fmt(r['rss_mib'], 1)})"),
        ("processes", lambda r: fmt(r["nprocs"])),
        ("cold start s", lambda r: fmt(r["cold_s"], 3)),
        ("wrk errors", lambda r: str(r["errors"])),
        ("foreign CPU cores (max)", lambda r: fmt(r["foreign_cores_max"], 2)),
    ]
    names = [n for n in STACKS if n in rows]
    width = 28
    print("\n" + "".ljust(width) + "".join(n.rjust(18) for n in names))
    for label, get in lines:
        print(label.ljust(width) + "".join(get(rows[n]).rjust(18) for n in names))
    print("\nShipyard targets:")
    for key, check in checks.items():
        verdict = "PASS" if check["pass"] else "FAIL"
        print(f"  {key:<28}{check['value']!s:>10}   {check['target']:<22}{verdict}")


def _version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return (proc.stdout + proc.stderr).strip().splitlines()[0] if (proc.stdout + proc.stderr
                                                                   ).strip() else "unknown"


def _pkg(venv: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    return _version([str(venv / "bin" / "python"), "-c", code])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    ours = Path(sys.executable).parent.parent
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "nginx": _version(["nginx", "-v"]), "wrk": _version(["wrk", "-v"]),
        "flask": _pkg(PERF / "venv-a", "flask"), "gunicorn": _pkg(PERF / "venv-a", "gunicorn"),
        "gevent": _pkg(PERF / "venv-a", "gevent"), "uvicorn": _pkg(PERF / "venv-c", "uvicorn"),
        "starlette": _pkg(PERF / "venv-c", "starlette"),
        "uvloop (Shipyard venv)": _pkg(ours, "uvloop"),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[0],
    }


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk window (10)")
    parser.add_argument("--rounds", type=int, default=1, help="launches of each stack (1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be >= 1")
    if not sys.platform.startswith("linux"):
        print("this benchmark reads /proc: Linux only", file=sys.stderr)
        return 2
    missing = missing_prerequisites()
    if missing:
        print("missing prerequisites:\n  " + "\n  ".join(missing), file=sys.stderr)
        print(f"create them with:\n  {SETUP_HINT}", file=sys.stderr)
        return 2

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "benchmarks/serve_invocations.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "duration_s": args.duration, "rounds": args.rounds, "workers": WORKERS,
            "warmup_s": WARMUP_S, "machine": machine()}
    started: list[subprocess.Popen[bytes]] = []
    runs: list[Measurement] = []
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-serve-bench-"))
    # nginx run as root drops its workers to www-data, which must reach gunicorn's socket
    scratch.chmod(0o755)
    names = list(STACKS)
    try:
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(names)
            for name in names[shift:] + names[:shift]:
                res = measure(name, rnd, scratch, args.duration, started)
                runs.append(res)
                if res.error:
                    print(f"round {rnd} {name:<10} ERROR {res.error}\n{res.log_tail}", flush=True)
                else:
                    print(f"round {rnd} {name:<10} cold {res.cold_s:.3f} s | c1 "
                          f"{res.c1['rps']:8.0f} req/s | c64 {res.c64['rps']:8.0f} req/s p50 "
                          f"{res.c64['p50_ms']:.2f} ms, {res.c64['cpu_us_per_req']:.0f} us CPU/req"
                          f" | foreign {res.c64['foreign_cores']:.2f} cores", flush=True)
                if res.left_over:
                    print(f"WARNING: {name} left processes {res.left_over}", file=sys.stderr)
    finally:
        for proc in list(started):  # interrupted mid-measure: stop what we started
            stop_group(proc)
        shutil.rmtree(scratch, ignore_errors=True)

    rows = summarize(runs)
    checks = verdicts(rows)
    print_table(rows, checks)
    result = {"meta": meta, "stacks": {n: STACKS[n][0] for n in STACKS}, "summary": rows,
              "targets": checks, "pass": bool(checks) and all(c["pass"] for c in checks.values()),
              "runs": [vars(r) for r in runs]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
