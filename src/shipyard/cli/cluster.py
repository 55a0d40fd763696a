"""``shipyard cluster status``: where work can run and what runs where.

On a swarm (``--runtime swarm``): every node with its address, state, resources, what its
running containers reserve, and which containers they are. On one engine: the machine's
capacity as the capacity queue shares it out, what holds it and what waits (docs/runtimes.md).
Read from the runtime and the data directory's capacity ledger directly, like ``shipyard
config show``: no server needs to run.
"""

from __future__ import annotations

import json
from typing import Any

import click

from shipyard.settings import Settings

_GIB = 1024 ** 3


@click.group("cluster")
def cluster() -> None:
    """The machines jobs and endpoints run on."""


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Nodes, their resources and what runs where (one engine: its capacity and queue)."""
    from shipyard.control.context import runtime_for

    runtime = runtime_for(settings)
    try:
        document = _describe(settings, runtime)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
        return
    click.echo(_render(document))


def _describe(settings: Settings, runtime: Any) -> dict[str, Any]:
    from shipyard.runtimes.swarm import SwarmRuntime

    if isinstance(runtime, SwarmRuntime):
        return {"Runtime": runtime.kind, "Nodes": [{
            "Hostname": n.hostname, "Address": n.address, "State": n.state,
            "Availability": n.availability, "Role": n.role, "Cpus": n.cpus,
            "MemoryBytes": n.memory_bytes, "CpusReserved": n.reserved_cpus,
            "MemoryBytesReserved": n.reserved_memory_bytes,
            "Containers": list(n.containers)} for n in runtime.nodes()]}
    from shipyard.control import capacity
    from shipyard.control.context import Context

    ctx = Context.build(settings, runtime)
    try:
        return {"Runtime": runtime.kind, "Capacity": capacity.snapshot(ctx)}
    finally:
        ctx.store.close()


def _render(document: dict[str, Any]) -> str:
    lines = [f"runtime: {document['Runtime']}"]
    if "Nodes" in document:
        lines.append(f"{'NODE':<20} {'ADDRESS':<16} {'STATE':<8} {'AVAILABILITY':<12} "
                     f"{'CPUS':>11} {'MEMORY GiB':>13}  CONTAINERS")
        for node in document["Nodes"]:
            cpus = f"{node['CpusReserved']:.1f}/{node['Cpus']:.0f}"
            memory = f"{node['MemoryBytesReserved'] / _GIB:.1f}/{node['MemoryBytes'] / _GIB:.1f}"
            role = " (manager)" if node["Role"] == "manager" else ""
            lines.append(f"{node['Hostname'] + role:<20} {node['Address']:<16} "
                         f"{node['State']:<8} {node['Availability']:<12} {cpus:>11} "
                         f"{memory:>13}  {', '.join(node['Containers']) or '-'}")
        lines.append("CPUS and MEMORY: reserved by running containers / the node's")
        return "\n".join(lines)
    snapshot = document["Capacity"]
    if not snapshot["Enabled"]:
        lines.append("capacity queue: off (setting capacity_queue, or the machine's size is "
                     "unknown)")
        return "\n".join(lines)
    lines.append(f"capacity: {snapshot['CpusHeld']:.1f}/{snapshot['Cpus']:.1f} CPUs, "
                 f"{snapshot['MemoryBytesHeld'] / _GIB:.1f}/"
                 f"{snapshot['MemoryBytes'] / _GIB:.1f} GiB reserved")
    for row in snapshot["Held"]:
        lines.append(f"  running  {row['Kind']:<10} {row['Name']:<40} {row['What']}")
    for row in snapshot["Waiting"]:
        lines.append(f"  waiting  {row['Kind']:<10} {row['Name']:<40} {row['What']} "
                     f"(#{row['Position']})")
    return "\n".join(lines)
