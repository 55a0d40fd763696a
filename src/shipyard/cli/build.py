"""``shipyard build``: build a project folder into one SageMaker image, and push it.

The engine is reached directly (``docker.from_env``), not through the API server: building is
local work on the developer's machine or CI runner. See docs/build.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from shipyard.build.base import DEFAULT_BASE, engine_errors, make_base_image
from shipyard.build.image import BuildOptions, build_image, plan_build, write_context
from shipyard.build.project import load_project
from shipyard.build.push import push_image, resolve_credentials
from shipyard.build.records import append_record
from shipyard.build.reference import parse_ref
from shipyard.cli.errors import CliError, ExitCode, from_shipyard
from shipyard.cli.parsing import pairs
from shipyard.contract.labels import MANAGED_LABEL, SCOPE_LABEL
from shipyard.errors import ShipyardError
from shipyard.settings import Settings

__all__ = ["build"]



def _progress(quiet: bool) -> Any:
    if quiet:
        return None

    def show(text: str) -> None:
        click.echo(text, nl=False, err=True)

    return show


def _client() -> Any:
    import docker

    with engine_errors("connecting"):
        client = docker.from_env(timeout=600)
        client.ping()
    return client


@click.command()
@click.argument("project_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("-t", "--tag", help="Image reference REPOSITORY[:TAG] (include the registry to "
              "push); default shipyard/<project>:<content hash>.")
@click.option("--base", help=f"Base image with Python 3.10+ and pip [default {DEFAULT_BASE}].")
@click.option("--gpu/--no-gpu", default=None,
              help="GPU recipe: CUDA runtime libraries, no driver [default: shipyard.toml].")
@click.option("--make-base", is_flag=True,
              help=f"Make {DEFAULT_BASE} with debootstrap if it is missing (root, ~1 min); "
              "without PROJECT_DIR, only that.")
@click.option("--find-links", "find_links", multiple=True, metavar="DIR",
              help="Extra folder of wheels for the wheelhouse. Repeatable.")
@click.option("--no-index", is_flag=True,
              help="Resolve from --find-links only (air-gapped builds).")
@click.option("--no-cache", is_flag=True,
              help="Re-resolve the wheelhouse and rebuild every layer.")
@click.option("--allow-network", is_flag=True,
              help="Give RUN steps network access (default: none, the build is offline).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra image label.")
@click.option("--push", "do_push", is_flag=True, help="Push the tag to its registry.")
@click.option("--force", is_flag=True, help="Push even if the tag exists (tags are immutable "
              "otherwise).")
@click.option("--registry-username", help="[env SHIPYARD_REGISTRY_USERNAME; else docker config]")
@click.option("--registry-password", help="[env SHIPYARD_REGISTRY_PASSWORD] Prefer "
              "--registry-password-stdin: arguments are visible to other users.")
@click.option("--registry-password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure-registry", is_flag=True,
              help="Allow plain HTTP to the registry (loopback registries always are).")
@click.option("--dockerfile", "print_dockerfile", is_flag=True,
              help="Print the Dockerfile and exit without building.")
@click.option("--context-out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the build context (Dockerfile, code/, wheels/) to this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No build log on stderr.")
@click.pass_obj
def build(settings: Settings, project_dir: Path | None, tag: str | None, base: str | None,
          gpu: bool | None, make_base: bool, find_links: tuple[str, ...], no_index: bool,
          no_cache: bool, allow_network: bool, labels: tuple[str, ...], do_push: bool,
          force: bool, registry_username: str | None, registry_password: str | None,
          registry_password_stdin: bool, insecure_registry: bool, print_dockerfile: bool,
          context_out: Path | None, as_json: bool, quiet: bool) -> None:
    """Build PROJECT_DIR (default: .) into one image that runs as `train` and as `serve`.

    PROJECT_DIR holds train.py and/or inference.py, an optional requirements.txt (resolved to
    wheels on this host, installed offline), an optional Dockerfile.fragment and an optional
    shipyard.toml [build] table. Prints the tag, and the digest when pushed.
    """
    try:
        _build(settings, project_dir, tag, base, gpu, make_base, find_links, no_index,
               no_cache, allow_network, labels, do_push, force, registry_username,
               registry_password, registry_password_stdin, insecure_registry,
               print_dockerfile, context_out, as_json, quiet)
    except ShipyardError as exc:
        raise from_shipyard(exc) from exc


def _build(settings: Settings, project_dir: Path | None, tag: str | None, base: str | None,
           gpu: bool | None, make_base: bool, find_links: tuple[str, ...], no_index: bool,
           no_cache: bool, allow_network: bool, labels: tuple[str, ...], do_push: bool,
           force: bool, registry_username: str | None, registry_password: str | None,
           registry_password_stdin: bool, insecure_registry: bool, print_dockerfile: bool,
           context_out: Path | None, as_json: bool, quiet: bool) -> None:
    if registry_password_stdin:
        if registry_password is not None:
            raise CliError("give --registry-password or --registry-password-stdin, not both",
                           ExitCode.USAGE)
        registry_password = sys.stdin.read().rstrip("\r\n")
    if tag:
        parse_ref(tag)
    if (force or registry_username or registry_password) and not do_push:
        raise CliError("--force and the registry options go with --push", ExitCode.USAGE)
    credentials = None
    if do_push:
        # Before the build: bad credentials or a missing registry must not cost a build.
        if not tag:
            raise CliError("--push needs --tag REGISTRY/REPOSITORY:TAG", ExitCode.USAGE)
        credentials = resolve_credentials(parse_ref(tag).registry, username=registry_username,
                                          password=registry_password, environ=os.environ)
    image_labels = pairs(labels, "--label")
    if settings.scope:
        image_labels.setdefault(SCOPE_LABEL, settings.scope)
    client = _client()
    try:
        if make_base and project_dir is None:
            made = make_base_image(client, base or DEFAULT_BASE)
            click.echo(made)
            return
        project = load_project(project_dir or Path("."))
        options = BuildOptions(tag=tag, base=base, gpu=gpu, make_base=make_base,
                               find_links=tuple(str(Path(f).resolve()) for f in find_links),
                               no_index=no_index, no_cache=no_cache,
                               allow_network=allow_network, labels=image_labels)
        cache_dir = settings.data_dir / "cache"
        probe_labels = {MANAGED_LABEL: "true", **image_labels}
        if print_dockerfile or context_out is not None:
            plan = plan_build(client, project, options, cache_dir=cache_dir,
                              probe_labels=probe_labels)
            if context_out is not None:
                write_context(plan, context_out)
            if print_dockerfile:
                click.echo(plan.dockerfile, nl=False)
                return
        result = build_image(client, project, options, cache_dir=cache_dir,
                             probe_labels=probe_labels, on_log=_progress(quiet or as_json))
        append_record(settings.data_dir, "build", result.as_record())
        output: dict[str, Any] = result.as_record()
        if not as_json:
            how = "reused" if result.reused else "built"
            click.echo(f"{how} {result.tag} ({result.image_id[:19]}, {result.recipe} recipe)",
                       err=True)
        if do_push:
            pushed = push_image(client, result.tag, credentials=credentials, force=force,
                                insecure=insecure_registry,
                                on_log=_progress(quiet or as_json))
            append_record(settings.data_dir, "push", pushed.as_record())
            output["push"] = pushed.as_record()
            if not as_json:
                click.echo(f"pushed {pushed.reference}@{pushed.digest}", err=True)
        if as_json:
            click.echo(json.dumps(output, indent=2))
        elif do_push:
            click.echo(f"{output['push']['reference']}@{output['push']['digest']}")
        else:
            click.echo(result.tag)
    finally:
        client.close()
