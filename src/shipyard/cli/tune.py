"""``shipyard tune`` and ``shipyard tuning ls | describe | jobs | watch | stop``:
hyperparameter tuning jobs (CreateHyperParameterTuningJob), each trial a training job.

The server checks the request (docs/tuning.md); this module only turns options into it, and
refuses before calling the server what it can tell from the options alone: a ``--range`` it
cannot read, an ``--objective`` no ``--metric`` defines.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.errors import CliError, ExitCode, from_shipyard
from shipyard.cli.output import TERMINAL, as_datetime, exit_code_for, open_client
from shipyard.cli.parsing import pairs, to_uri
from shipyard.client import Client
from shipyard.errors import ShipyardError
from shipyard.settings import Settings

TUNING = kinds.TUNING.key
STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
#: MaxNumberOfTrainingJobs when ``--max-jobs`` is not given (Grid: the grid's size).
DEFAULT_MAX_JOBS = 10
#: How often the tuning job is described while it is watched.
POLL_SECONDS = 1.0
#: Trials the end of ``shipyard tune`` shows.
LEADERBOARD_SIZE = 5
#: HyperParameterTuningJobName: at most 32 characters (botocore's model).
MAX_NAME_LENGTH = 32
RANGE_FORMS = ("LOW:HIGH[:log|:linear|:reverselog] (continuous), LOW..HIGH[:log|:linear] "
               "(integer) or A,B,... (categorical)")
# The numbers ParameterRanges takes (the server refuses others: NaN, hex, 1_000, blanks).
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SCALES = {"auto": "Auto", "linear": "Linear", "log": "Logarithmic",
           "reverselog": "ReverseLogarithmic"}


# ------------------------------------------------------------------------------ parsing


def parse_range(item: str) -> tuple[str, dict[str, Any]]:
    """One ``--range``: the ``ParameterRanges`` member it goes in and its entry."""
    def bad(why: str) -> CliError:
        return CliError(f"--range {item!r}: {why}; expected NAME={RANGE_FORMS}",
                        ExitCode.USAGE)

    name, sep, spec = item.partition("=")
    if not sep or not name:
        raise bad("no NAME=")
    if "," in spec:
        values = spec.split(",")
        if "" in values:
            raise bad("an empty categorical value")
        return "CategoricalParameterRanges", {"Name": name, "Values": values}
    integer = ".." in spec
    if integer:
        bounds, _, scale = spec.partition(":")
        low, _, high = bounds.partition("..")
    else:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise bad("not a range")
        low, high, scale = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    pattern = _INTEGER if integer else _NUMBER
    for bound in (low, high):
        if not pattern.fullmatch(bound):
            raise bad(f"{bound!r} is not {'an integer' if integer else 'a number'}")
    if float(low) > float(high):
        raise bad(f"LOW ({low}) is greater than HIGH ({high})")
    entry: dict[str, Any] = {"Name": name, "MinValue": low, "MaxValue": high}
    if scale:
        if scale not in _SCALES or (integer and scale == "reverselog"):
            allowed = "log, linear" if integer else "log, linear, reverselog"
            kind = "an integer" if integer else "a continuous"
            raise bad(f"unknown scale {scale!r} ({kind} range takes {allowed})")
        entry["ScalingType"] = _SCALES[scale]
    return ("IntegerParameterRanges" if integer else "ContinuousParameterRanges"), entry


def parse_ranges(items: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """``--range`` options as ``ParameterRanges``; a name given twice is refused."""
    found: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for item in items:
        member, entry = parse_range(item)
        if entry["Name"] in seen:
            raise CliError(f"--range {entry['Name']} is given twice", ExitCode.USAGE)
        seen.add(entry["Name"])
        found.setdefault(member, []).append(entry)
    return found


def default_tuning_name(image: str) -> str:
    """``<image base name>-YYMMDD-HHMMSS`` in 32 characters, as AWS allows for tuning jobs
    (trials add ``-NNN-xxxxxxxx``)."""
    base = image.rstrip("/").split("/")[-1].split(":")[0].split("@")[0]
    stamp = f"{dt.datetime.now():%y%m%d-%H%M%S}"
    base = re.sub(r"[^a-zA-Z0-9]+", "-", base)[:MAX_NAME_LENGTH - len(stamp) - 1].strip("-")
    return f"{base or 'tune'}-{stamp}"


# ------------------------------------------------------------------------------ tune


@click.command()
@click.argument("image")
@click.option("--name", help="Tuning job name, at most 32 characters "
                             "(default: image name + timestamp).")
@click.option("--range", "ranges", multiple=True, metavar="NAME=RANGE",
              help=f"A tuned hyperparameter: {RANGE_FORMS}. Repeatable.")
@click.option("--objective", required=True, metavar="METRIC",
              help="The metric to optimise: one of the --metric names.")
@click.option("--minimize/--maximize", "minimize", default=None,
              help="Whether lower or higher objective values are better (one is required).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=REGEX",
              help="Metric definition applied to each trial's logs. Repeatable.")
@click.option("--strategy", type=click.Choice(STRATEGIES, case_sensitive=False),
              default="Bayesian", show_default=True)
@click.option("--max-jobs", type=click.IntRange(min=1), default=None,
              help=f"MaxNumberOfTrainingJobs [default: {DEFAULT_MAX_JOBS}; Grid: every point].")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="MaxParallelTrainingJobs.")
@click.option("--early-stopping", is_flag=True,
              help="TrainingJobEarlyStoppingType Auto: stop trials worse than the median.")
@click.option("--seed", type=int, default=None, help="RandomSeed: the same seed, the same "
                                                      "trials.")
@click.option("--target", type=float, default=None,
              help="TargetObjectiveMetricValue: end once a trial reaches it.")
@click.option("--min-resource", type=click.IntRange(min=1), default=None,
              help="Hyperband MinResource (epochs) [default: 1].")
@click.option("--max-resource", type=click.IntRange(min=1), default=None,
              help="Hyperband MaxResource (epochs) [default: the epochs --hp].")
@click.option("--channel", "channels", multiple=True, metavar="NAME=URI",
              help="Input channel: s3://, file:// or a local path. Repeatable.")
@click.option("--hp", "hps", multiple=True, metavar="KEY=VALUE",
              help="Static hyperparameter, the same for every trial. Repeatable.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE")
@click.option("--output", "output_path", help="S3OutputPath (default: file://DATA_DIR/output).")
@click.option("--instance-type", default="local", show_default=True)
@click.option("--max-runtime", default=86400, show_default=True, type=int,
              help="MaxRuntimeInSeconds of each trial.")
@click.option("--detach", is_flag=True, help="Return once the tuning job is created.")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@click.pass_obj
def tune(settings: Settings, image: str, name: str | None, ranges: tuple[str, ...],
         objective: str, minimize: bool | None, metrics: tuple[str, ...], strategy: str,
         max_jobs: int | None, parallel: int, early_stopping: bool, seed: int | None,
         target: float | None, min_resource: int | None, max_resource: int | None,
         channels: tuple[str, ...], hps: tuple[str, ...], envs: tuple[str, ...],
         output_path: str | None, instance_type: str, max_runtime: int, detach: bool,
         as_json: bool) -> None:
    """Tune IMAGE's hyperparameters: a training job per trial, the best kept.

    \b
    shipyard tune IMAGE --range lr=1e-4:1e-1:log --range layers=2..8 --range opt=adam,sgd \\
        --metric 'validation:loss=val_loss=([0-9.e-]+)' --objective validation:loss \\
        --minimize --max-jobs 20 --parallel 4
    """
    parameter_ranges = parse_ranges(ranges)
    if not parameter_ranges:
        raise CliError("give at least one --range NAME=RANGE", ExitCode.USAGE)
    definitions = pairs(metrics, "--metric")
    if objective not in definitions:
        known = ", ".join(definitions) or "none given"
        raise CliError(f"--objective {objective!r} is not one of the --metric names ({known}): "
                       f"add --metric '{objective}=REGEX'", ExitCode.USAGE)
    if minimize is None:
        raise CliError("give --minimize or --maximize: which objective values are better",
                       ExitCode.USAGE)
    name = name or default_tuning_name(image)
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": parallel}
    if max_jobs is not None or strategy != "Grid":
        limits["MaxNumberOfTrainingJobs"] = max_jobs or DEFAULT_MAX_JOBS
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Minimize" if minimize else "Maximize",
                                             "MetricName": objective},
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges,
        "TrainingJobEarlyStoppingType": "Auto" if early_stopping else "Off",
    }
    if seed is not None:
        config["RandomSeed"] = seed
    if target is not None:
        config["TuningJobCompletionCriteria"] = {"TargetObjectiveMetricValue": target}
    band = {k: v for k, v in (("MinResource", min_resource), ("MaxResource", max_resource))
            if v is not None}
    if band:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": band}
    definition: dict[str, Any] = {
        "AlgorithmSpecification": {
            "TrainingImage": image, "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": k, "Regex": v} for k, v in definitions.items()]},
        "RoleArn": f"arn:aws:iam::{settings.account_id}:role/shipyard",
        "StaticHyperParameters": pairs(hps, "--hp"),
        "OutputDataConfig": {"S3OutputPath": to_uri(output_path) if output_path
                             else (settings.data_dir / "output").as_uri()},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }
    if channels:
        definition["InputDataConfig"] = [
            {"ChannelName": ch, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": to_uri(uri),
                "S3DataDistributionType": "FullyReplicated"}}}
            for ch, uri in pairs(channels, "--channel").items()]
    if envs:
        definition["Environment"] = pairs(envs, "--env")
    client = open_client(settings)
    arn = client.create_job(TUNING, {"HyperParameterTuningJobName": name,
                                     "HyperParameterTuningJobConfig": config,
                                     "TrainingJobDefinition": definition})
    if detach:
        click.echo(json.dumps({"HyperParameterTuningJobArn": arn,
                               "HyperParameterTuningJobName": name}) if as_json else arn)
        return
    click.echo(f"Hyperparameter tuning job {name} created ({arn})", err=True)
    raise SystemExit(watch_tuning(client, name, as_json=as_json))


# ------------------------------------------------------------------------------ watching


def describe(client: Client, name: str) -> dict[str, Any]:
    try:
        return client.describe(TUNING, name)
    except ShipyardError as exc:
        raise _not_found(exc, name) from exc


def trials_of(client: Client, name: str) -> list[dict[str, Any]]:
    try:
        return client.tuning_trials(name)
    except ShipyardError as exc:
        raise _not_found(exc, name) from exc


def _not_found(exc: ShipyardError, name: str) -> CliError:
    error = from_shipyard(exc)
    if error.code == ExitCode.NOT_FOUND:
        return CliError(f"no hyperparameter tuning job named {name}", ExitCode.NOT_FOUND)
    return error


def watch_tuning(client: Client, name: str, *, as_json: bool = False) -> int:
    """A line on stderr each time the counters or the best trial change, until the tuning job
    ends; then its status and the leaderboard. Ctrl-C leaves it running."""
    shown = ""
    try:
        while True:
            record = describe(client, name)
            line = progress(record)
            if not as_json and line != shown:
                click.secho(f"{dt.datetime.now():%H:%M:%S} {line}", fg="cyan", err=True)
                shown = line
            if record[kinds.TUNING.status_field] in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached: hyperparameter tuning job {name} keeps running.\n"
            f"  reattach: shipyard tuning watch {name}\n"
            f"  trials:   shipyard tuning jobs {name}\n"
            f"  stop:     shipyard tuning stop {name}", err=True)
        return 130
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        summarize(record)
        leaderboard(ranked(trials_of(client, name))[:LEADERBOARD_SIZE])
    return exit_code_for(TUNING, record)


def counts(record: dict[str, Any]) -> str:
    """``3/10 completed, 2 running, 0 failed`` (and ``, 1 stopped`` when some were)."""
    counters = record.get("TrainingJobStatusCounters") or {}
    total = _config(record).get("ResourceLimits", {}).get("MaxNumberOfTrainingJobs", "?")
    failed = counters.get("RetryableError", 0) + counters.get("NonRetryableError", 0)
    text = (f"{counters.get('Completed', 0)}/{total} completed, "
            f"{counters.get('InProgress', 0)} running, {failed} failed")
    if counters.get("Stopped"):
        text += f", {counters['Stopped']} stopped"
    return text


def progress(record: dict[str, Any]) -> str:
    """``InProgress: 3/10 completed, 2 running, 0 failed; best loss=0.25 (trial: x=1)``."""
    line = f"{record[kinds.TUNING.status_field]}: {counts(record)}"
    best = record.get("BestTrainingJob")
    if best and best.get("FinalHyperParameterTuningJobObjectiveMetric"):
        metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
        line += (f"; best {metric['MetricName']}={_number(metric['Value'])} "
                 f"({best['TrainingJobName']}: {_hyperparameters(best)})")
    return line


def summarize(record: dict[str, Any]) -> None:
    status = record[kinds.TUNING.status_field]
    colour = {"Completed": "green", "Stopped": "yellow"}.get(status, "red")
    click.secho(f"Hyperparameter tuning job {record['HyperParameterTuningJobName']}: {status}",
                fg=colour, err=True)
    if record.get("FailureReason"):
        click.echo(f"FailureReason: {record['FailureReason']}", err=True)
    if record.get("TuningJobCompletionDetails"):
        click.echo("Ended by its completion criteria (TuningJobCompletionCriteria).", err=True)


def ranked(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first by each trial's objective (its ``Type`` says which way); trials without an
    objective last, by name."""
    def key(trial: dict[str, Any]) -> tuple[int, float, str]:
        metric = trial.get("FinalHyperParameterTuningJobObjectiveMetric")
        if metric is None:
            return 1, 0.0, trial["TrainingJobName"]
        value = float(metric["Value"])
        return 0, -value if metric.get("Type") == "Maximize" else value, trial["TrainingJobName"]
    return sorted(trials, key=key)


def leaderboard(trials: list[dict[str, Any]]) -> None:
    if not trials:
        return
    width = max(len("TRIAL"), *(len(t["TrainingJobName"]) for t in trials))
    click.echo(f"{'TRIAL':<{width}}  {'STATUS':<10} {'OBJECTIVE':<12} HYPERPARAMETERS")
    for trial in trials:
        metric = trial.get("FinalHyperParameterTuningJobObjectiveMetric")
        value = _number(metric["Value"]) if metric else "-"
        click.echo(f"{trial['TrainingJobName']:<{width}}  {trial['TrainingJobStatus']:<10} "
                   f"{value:<12} {_hyperparameters(trial)}")


def _config(record: dict[str, Any]) -> dict[str, Any]:
    # Describe carries Strategy and ResourceLimits only inside the config (botocore's model).
    return dict(record.get("HyperParameterTuningJobConfig") or {})


def _number(value: Any) -> str:
    return f"{float(value):.6g}"


def _hyperparameters(trial: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in (trial.get("TunedHyperParameters") or {}).items())


def _stamp(value: Any) -> str:
    return "-" if value is None else f"{as_datetime(value):%Y-%m-%d %H:%M:%S}"


# ------------------------------------------------------------------------------ tuning


@click.group()
def tuning() -> None:
    """Hyperparameter tuning jobs (shipyard tune starts one)."""


@tuning.command("ls")
@click.option("--status", type=click.Choice(["InProgress", "Stopping", "Completed", "Failed",
                                             "Stopped"]))
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(settings: Settings, status: str | None, limit: int, as_json: bool) -> None:
    """Tuning jobs, newest first, with their best objective value."""
    client = open_client(settings)
    rows = []
    for summary in client.list_jobs(TUNING, status=status, limit=limit):
        # The summaries do not carry the best trial: Describe does.
        best = (describe(client, summary["HyperParameterTuningJobName"]).get("BestTrainingJob")
                or {}).get("FinalHyperParameterTuningJobObjectiveMetric")
        counters = summary.get("TrainingJobStatusCounters") or {}
        rows.append({"Name": summary["HyperParameterTuningJobName"],
                     "Status": summary["HyperParameterTuningJobStatus"],
                     "Strategy": summary.get("Strategy"),
                     "Completed": counters.get("Completed", 0),
                     "MaxNumberOfTrainingJobs": (summary.get("ResourceLimits") or {}).get(
                         "MaxNumberOfTrainingJobs"),
                     "BestObjectiveValue": best["Value"] if best else None,
                     "CreationTime": as_datetime(summary["CreationTime"]).timestamp()})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<33} {'STATUS':<11} {'STRATEGY':<10} {'COMPLETED':<10} "
               f"{'BEST':<12} CREATED")
    for row in rows:
        done = f"{row['Completed']}/{row['MaxNumberOfTrainingJobs']}"
        best_value = "-" if row["BestObjectiveValue"] is None else _number(
            row["BestObjectiveValue"])
        click.echo(f"{row['Name']:<33} {row['Status']:<11} {row['Strategy'] or '-':<10} "
                   f"{done:<10} {best_value:<12} {_stamp(row['CreationTime'])}")


@tuning.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True,
              help="The DescribeHyperParameterTuningJob record, whole.")
@click.pass_obj
def describe_command(settings: Settings, name: str, as_json: bool) -> None:
    """A tuning job's key fields (--json: the whole record)."""
    record = describe(open_client(settings), name)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    config = _config(record)
    objective = config.get("HyperParameterTuningJobObjective")
    limits = config.get("ResourceLimits") or {}
    fields = [
        ("Name", record["HyperParameterTuningJobName"]),
        ("ARN", record["HyperParameterTuningJobArn"]),
        ("Status", record["HyperParameterTuningJobStatus"]),
        ("Strategy", f"{config.get('Strategy')}, early stopping "
                     f"{config.get('TrainingJobEarlyStoppingType', 'Off')}"),
        ("Objective", f"{objective['Type']} {objective['MetricName']}" if objective
         else "per training job definition"),
        ("Limits", f"{limits.get('MaxNumberOfTrainingJobs')} trials, "
                   f"{limits.get('MaxParallelTrainingJobs')} at a time"),
        ("Trials", counts(record)),
        ("Created", _stamp(record.get("CreationTime"))),
        ("Ended", _stamp(record.get("HyperParameterTuningEndTime"))),
    ]
    best = record.get("BestTrainingJob")
    if best and best.get("FinalHyperParameterTuningJobObjectiveMetric"):
        metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
        fields.append(("Best", f"{best['TrainingJobName']} {metric['MetricName']}="
                               f"{_number(metric['Value'])}"))
        fields.append(("Best's hyperparameters", _hyperparameters(best)))
    parents = (record.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs")
    if parents:
        fields.append(("Warm start", f"{record['WarmStartConfig'].get('WarmStartType')} from "
                       + ", ".join(p["HyperParameterTuningJobName"] for p in parents)))
    if record.get("FailureReason"):
        fields.append(("FailureReason", record["FailureReason"]))
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        click.echo(f"{key + ':':<{width}} {value}")


@tuning.command("jobs")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True,
              help="The trials' summaries (ListTrainingJobsForHyperParameterTuningJob).")
@click.pass_obj
def jobs_command(settings: Settings, name: str, as_json: bool) -> None:
    """A tuning job's trials, best objective first."""
    trials = ranked(trials_of(open_client(settings), name))
    if as_json:
        click.echo(json.dumps(trials, indent=2, default=str))
        return
    leaderboard(trials)


@tuning.command("watch")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@click.pass_obj
def watch_command(settings: Settings, name: str, as_json: bool) -> None:
    """Follow a tuning job until it ends; the exit code says how it ended."""
    raise SystemExit(watch_tuning(open_client(settings), name, as_json=as_json))


@tuning.command("stop")
@click.argument("name")
@click.option("--wait", "wait_", is_flag=True, help="Wait until its trials have stopped.")
@click.pass_obj
def stop(settings: Settings, name: str, wait_: bool) -> None:
    """Stop a tuning job: no new trials; running ones get SIGTERM, then SIGKILL."""
    client = open_client(settings)
    try:
        client.stop(TUNING, name)
    except ShipyardError as exc:
        raise _not_found(exc, name) from exc
    click.echo(f"Stopping hyperparameter tuning job {name}", err=True)
    if wait_:
        record = client.wait(TUNING, name)
        summarize(record)
        raise SystemExit(exit_code_for(TUNING, record))
