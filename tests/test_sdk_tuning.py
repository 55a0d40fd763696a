"""The SageMaker Python SDK v2's ``HyperparameterTuner``, unchanged, against Shipyard.

As in ``tests/test_sdk_compat.py`` (whose approach this module follows and whose run helpers
it shares): a real ``shipyard server`` in a process of its own with its S3 store, the SDK's
environment exactly what ``shipyard server status`` prints plus isolation from this machine's
``~/.aws``, no role, no bucket and no endpoint in code, and the network blocked except
loopback while the SDK runs (anything it tried to reach off this machine fails the module).

Three tuning runs go side by side, each in its own thread with its own ``Session``:

* ``tuner``: a generic ``Estimator`` over an image of this module (``train`` and ``serve`` on
  its ``PATH``, no toolkit): the training program reads
  ``/opt/ml/input/config/hyperparameters.json``, prints ``epoch=N val_loss=<objective>`` per
  epoch and writes its model; ``serve`` answers with that model. Bayesian search over a
  continuous (log-scaled), an integer and a categorical range, ``fit(wait=False)`` then
  ``wait()``, ``best_training_job``, ``analytics().dataframe()``, ``best_estimator`` and
  ``deploy`` of the best, ``predict``, delete; then ``HyperparameterTuner.attach``.
* ``framework``: a framework estimator (``SKLearn`` with ``image_uri``, ``entry_point`` and
  ``source_dir``) on the toolkit image: every static hyperparameter and every categorical
  value travels JSON-quoted, and the script sees them decoded. Random search, maximised.
* ``grid``: Grid over categorical values only: every combination once.

The objective is a pure function of the hyperparameters (:func:`objective`; its source is
copied into the images), so each trial's value is checked exactly.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.support import offline
from tests.support.images import build_image
from tests.support.sdk_runs import Outcome, run_all, sdk_user_environment
from tests.support.user_server import UserServer, user_server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: What the server's defaults file names (shipyard.api.sdk_defaults).
ROLE = "arn:aws:iam::000000000000:role/ShipyardExecutionRole"
BUCKET = "sagemaker-us-east-1-000000000000"
TRIAL_NAME = r"^{tuning}-(?P<n>\d{{3}})-[0-9a-f]{{8}}$"
OPTIMIZERS = ("adam", "sgd", "rmsprop")
LOSS_REGEX = r"val_loss=([-+0-9.eE]+)"


def objective(lr: float, layers: int, optimizer: str) -> float:
    """The validation loss a trial reports: best near lr = 0.01, 3 layers, adam."""
    penalty = {"adam": 0.0, "sgd": 0.25, "rmsprop": 0.5}[optimizer]
    return (math.log10(lr) + 2) ** 2 + 0.5 * (layers - 3) ** 2 + penalty


_OBJECTIVE = inspect.getsource(objective)

# The tuned image's training program: hyperparameters.json read directly, one line per epoch
# (the last value is the objective), the model written where SageMaker expects it.
TRAIN = f'''#!/usr/bin/env python3
import json, math, sys, time
from pathlib import Path

{_OBJECTIVE}

hp = json.loads(Path("/opt/ml/input/config/hyperparameters.json").read_text())
print("argv", sys.argv[1:], "hyperparameters", json.dumps(hp, sort_keys=True), flush=True)
lr, layers, optimizer = float(hp["lr"]), int(hp["layers"]), hp["optimizer"]
epochs = int(hp["epochs"])
channel = Path("/opt/ml/input/data/training")
files = sorted(str(p.relative_to(channel)) for p in channel.rglob("*") if p.is_file())
final = objective(lr, layers, optimizer)
for epoch in range(epochs):
    loss = final + (epochs - 1 - epoch) / 10
    print(f"epoch={{epoch}} train_loss={{loss / 2!r}} val_loss={{loss!r}}", flush=True)
    time.sleep(0.3)
model = {{"lr": hp["lr"], "layers": hp["layers"], "optimizer": optimizer, "loss": final,
         "files": files}}
Path("/opt/ml/model/model.json").write_text(json.dumps(model))
'''

# The same image's inference server: the trained model and the request, echoed.
SERVE = '''#!/usr/bin/env python3
import json, os, signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
MODEL = json.load(open("/opt/ml/model/model.json"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/ping" else 404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(200, json.dumps({"model": MODEL, "body": body.decode()}).encode())


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''

# The framework script (SKLearn-style, run by the toolkit from source_dir): the decoded
# hyperparameters from SM_HPS, accuracy = 1 / (1 + objective), maximised.
FRAMEWORK_TRAIN = f'''import json, math, os, sys
from pathlib import Path

{_OBJECTIVE}

hp = json.loads(os.environ["SM_HPS"])
print("framework hyperparameters", json.dumps(hp, sort_keys=True), flush=True)
print("framework args", sys.argv[1:], flush=True)
accuracy = 1 / (1 + objective(float(hp["lr"]), int(hp["layers"]), hp["optimizer"]))
for epoch in range(int(hp["epochs"])):
    print(f"epoch {{epoch}}: accuracy={{accuracy!r}}", flush=True)
Path(os.environ["SM_MODEL_DIR"], "seen.json").write_text(json.dumps(
    {{"hps": hp, "helper": Path("helper.txt").read_text().strip()}}))
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[UserServer]:
    with user_server(tmp_path_factory.mktemp("sdk-tuning") / "state",
                     stop_grace_seconds="3") as running:
        yield running


@pytest.fixture(scope="module")
def sdk_environment(server: UserServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[dict[str, str]]:
    """``server status``'s variables and nothing else from AWS's world (see
    tests/test_sdk_compat.py), set for the module and restored after it."""
    with sdk_user_environment(server, tmp_path_factory.mktemp("sdk-tuning-home")) as env:
        yield env


@pytest.fixture(scope="module")
def tuned_image(docker_client: Any, base_image: str) -> str:
    """``train`` and ``serve`` on the PATH of one image, no toolkit, no entry point: SageMaker
    runs ``docker run IMAGE train`` and ``docker run IMAGE serve``."""
    return build_image(
        docker_client, "sdk-tuning", {"train": TRAIN, "serve": SERVE},
        "COPY train serve /usr/local/bin/\nRUN chmod 755 /usr/local/bin/train "
        "/usr/local/bin/serve\nENV PYTHONUNBUFFERED=1", with_toolkit=False)


def bounds(tuner: Any) -> dict[str, tuple[Any, ...]]:
    """A tuner's ranges as (min, max) or the categorical values, by name."""
    found: dict[str, tuple[Any, ...]] = {}
    for name, parameter in tuner._hyperparameter_ranges.items():
        values = getattr(parameter, "values", None)
        found[name] = tuple(values) if values is not None else (
            float(parameter.min_value), float(parameter.max_value))
    return found


def attempt(call: Callable[[], Any]) -> Outcome:
    """What ``call`` returned or raised, kept for the test that checks it."""
    try:
        return Outcome(value=call())
    except Exception as exc:
        return Outcome(error=exc)


@dataclass
class Runs:
    names: dict[str, str]
    outcomes: dict[str, Outcome]
    printed: dict[str, str]
    offline_attempts: list[str]

    def sagemaker(self) -> Any:
        return boto3.client("sagemaker")

    def read_tar(self, uri: str) -> dict[str, bytes]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}

    def trials(self, tuning: str) -> list[dict[str, Any]]:
        pages = self.sagemaker().get_paginator(
            "list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=tuning)
        return [s for page in pages for s in page["TrainingJobSummaries"]]


@dataclass(frozen=True)
class Sdk:
    """The SDK's classes, imported once the environment is in place (importing ``sagemaker``
    reads SAGEMAKER_SUPPRESS_V2_WARNING)."""

    estimator: Any
    sklearn: Any
    tuner: Any
    continuous: Any
    integer: Any
    categorical: Any


@pytest.fixture(scope="module")
def sdk(sdk_environment: dict[str, str]) -> Sdk:
    try:
        from sagemaker.estimator import Estimator
        from sagemaker.parameter import (
            CategoricalParameter,
            ContinuousParameter,
            IntegerParameter,
        )
        from sagemaker.sklearn.estimator import SKLearn
        from sagemaker.tuner import HyperparameterTuner
    except ImportError as exc:
        # The test extra installs it: in CI its absence is a failure, not a skip.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"the SageMaker Python SDK is required in CI: {exc}")
        pytest.skip(f"the SageMaker Python SDK is not installed: {exc}")
    return Sdk(Estimator, SKLearn, HyperparameterTuner, ContinuousParameter, IntegerParameter,
               CategoricalParameter)


@pytest.fixture(scope="module")
def runs(sdk: Sdk, images: dict[str, str], tuned_image: str,
         tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Data in the store's default bucket, then the module's three tuning runs side by side,
    with no role, no bucket and no endpoint in code."""
    Estimator, HyperparameterTuner = sdk.estimator, sdk.tuner  # the SDK's names
    CategoricalParameter = sdk.categorical
    s3 = boto3.client("s3")
    for key, body in {"tune/train/a.csv": "1,2\n", "tune/train/nested/b.csv": "3,4\n"}.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    source = tmp_path_factory.mktemp("tuning-source")
    (source / "train.py").write_text(FRAMEWORK_TRAIN)
    (source / "helper.txt").write_text("shipped with the code\n")
    suffix = uuid.uuid4().hex[:6]
    # Tuning job names: at most 32 characters.
    names = {"tuner": f"sdk-tune-{suffix}", "framework": f"sdk-tune-fw-{suffix}",
             "grid": f"sdk-tune-grid-{suffix}"}
    ranges = {"lr": sdk.continuous(1e-4, 1e-1, scaling_type="Logarithmic"),
              "layers": sdk.integer(1, 6),
              "optimizer": CategoricalParameter(list(OPTIMIZERS))}

    def tuner() -> Any:
        est = Estimator(image_uri=tuned_image, instance_count=1, instance_type="ml.m5.large",
                        hyperparameters={"epochs": 3})
        tuner = HyperparameterTuner(
            est, objective_metric_name="validation:loss", hyperparameter_ranges=ranges,
            metric_definitions=[{"Name": "validation:loss", "Regex": LOSS_REGEX},
                                {"Name": "train:loss", "Regex": r"train_loss=([-+0-9.eE]+)"}],
            objective_type="Minimize", strategy="Bayesian", max_jobs=6,
            max_parallel_jobs=3, random_seed=7)
        tuner.fit({"training": f"s3://{BUCKET}/tune/train"}, job_name=names["tuner"],
                  wait=False)
        tuner.wait()
        best = tuner.best_training_job()
        frame = tuner.analytics().dataframe()
        best_estimator = tuner.best_estimator()
        predictor = tuner.deploy(initial_instance_count=1, instance_type="ml.m5.large")
        answer = json.loads(predictor.predict(b"1,2,3",
                                              initial_args={"ContentType": "text/csv"}))
        endpoint = predictor.endpoint_name
        predictor.delete_model()
        predictor.delete_endpoint()
        # Attached last and apart: its own outcome, so the steps above are checked whatever
        # it does.
        attached = attempt(lambda: HyperparameterTuner.attach(names["tuner"]))
        return {"tuner": tuner, "attached": attached, "best": best, "frame": frame,
                "best_estimator": best_estimator, "answer": answer, "endpoint": endpoint}

    def framework() -> Any:
        est = sdk.sklearn(entry_point="train.py", source_dir=str(source),
                          image_uri=images["toolkit"], instance_count=1,
                          instance_type="ml.m5.large", hyperparameters={"epochs": 2})
        tuner = HyperparameterTuner(
            est, objective_metric_name="accuracy", hyperparameter_ranges=ranges,
            metric_definitions=[{"Name": "accuracy", "Regex": r"accuracy=([0-9.eE+-]+)"}],
            objective_type="Maximize", strategy="Random", max_jobs=4, max_parallel_jobs=2,
            random_seed=3)
        tuner.fit(job_name=names["framework"])
        frame = tuner.analytics().dataframe()
        best_estimator = tuner.best_estimator()
        attached = attempt(lambda: HyperparameterTuner.attach(names["framework"]))
        return {"tuner": tuner, "frame": frame, "best_estimator": best_estimator,
                "attached": attached}

    def grid() -> Any:
        est = Estimator(image_uri=tuned_image, instance_count=1, instance_type="ml.m5.large",
                        hyperparameters={"epochs": 1, "lr": 0.01})
        tuner = HyperparameterTuner(
            est, objective_metric_name="validation:loss",
            hyperparameter_ranges={"layers": CategoricalParameter(["2", "3"]),
                                   "optimizer": CategoricalParameter(["sgd", "adam"])},
            metric_definitions=[{"Name": "validation:loss", "Regex": LOSS_REGEX}],
            # max_jobs is given although Grid runs the whole grid: SDK 2.257 sends a
            # MaxNumberOfTrainingJobs of None without it, which botocore refuses.
            objective_type="Minimize", strategy="Grid", max_jobs=4, max_parallel_jobs=2)
        tuner.fit({"training": f"s3://{BUCKET}/tune/train"}, job_name=names["grid"])
        return {"tuner": tuner, "frame": tuner.analytics().dataframe(),
                "best": tuner.best_training_job()}

    with offline.blocked() as guard:
        outcomes, printed = run_all({"tuner": tuner, "framework": framework, "grid": grid})
    return Runs(names, outcomes, printed, list(guard.attempts))


def test_nothing_reached_off_this_machine(runs: Runs) -> None:
    assert runs.offline_attempts == []


def test_tuner_fit_runs_each_trial_as_a_training_job(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    name = runs.names["tuner"]
    described = result["tuner"].describe()
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["TrainingJobStatusCounters"] == {
        "Completed": 6, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0,
        "Stopped": 0}
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    config = described["HyperParameterTuningJobConfig"]
    assert (config["Strategy"], config["RandomSeed"]) == ("Bayesian", 7)
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 3
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize", "MetricName": "validation:loss"}
    definition = described["TrainingJobDefinition"]
    assert definition["RoleArn"] == ROLE  # the defaults file's: the code names none
    assert definition["StaticHyperParameters"] == {
        "epochs": "3", "_tuning_objective_metric": "validation:loss"}
    trials = runs.trials(name)
    assert len(trials) == 6
    pattern = re.compile(TRIAL_NAME.format(tuning=re.escape(name)))
    numbers = set()
    sagemaker = runs.sagemaker()
    for trial in trials:
        match = pattern.match(trial["TrainingJobName"])
        assert match, trial["TrainingJobName"]
        numbers.add(int(match["n"]))
        hp = trial["TunedHyperParameters"]
        assert set(hp) == {"lr", "layers", "optimizer"}
        assert 1e-4 <= float(hp["lr"]) <= 1e-1
        assert 1 <= int(hp["layers"]) <= 6 and hp["optimizer"] in OPTIMIZERS
        # The objective is the metric's last value: exactly what the trial computed.
        assert trial["FinalHyperParameterTuningJobObjectiveMetric"] == {
            "Type": "Minimize", "MetricName": "validation:loss",
            "Value": objective(float(hp["lr"]), int(hp["layers"]), hp["optimizer"])}
        job = sagemaker.describe_training_job(TrainingJobName=trial["TrainingJobName"])
        assert job["TuningJobArn"] == described["HyperParameterTuningJobArn"]
        assert job["HyperParameters"] == {**hp, "epochs": "3",
                                          "_tuning_objective_metric": "validation:loss"}
        assert job["AlgorithmSpecification"]["TrainingImage"] == definition[
            "AlgorithmSpecification"]["TrainingImage"]
        assert {m["MetricName"] for m in job["FinalMetricDataList"]} == {
            "train:loss", "validation:loss"}
    assert numbers == set(range(1, 7))
    # The tuner's wait() printed its progress dots and the final "!".
    assert runs.printed["tuner"].rstrip().endswith("!")


def test_best_training_job_is_the_lowest_objective(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    trials = runs.trials(runs.names["tuner"])
    lowest = min(trials, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"][
        "Value"])
    assert result["best"] == lowest["TrainingJobName"]
    assert result["tuner"].best_training_job() == result["best"]
    best = result["tuner"].describe()["BestTrainingJob"]
    assert best["TrainingJobName"] == result["best"]
    assert best["TunedHyperParameters"] == lowest["TunedHyperParameters"]


def test_attach_rebuilds_the_tuner(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    original, attached = result["tuner"], result["attached"].get()
    assert attached.latest_tuning_job.name == runs.names["tuner"]
    assert attached.objective_metric_name == "validation:loss"
    assert attached.objective_type == "Minimize"
    assert attached.strategy == "Bayesian"
    assert (attached.max_jobs, attached.max_parallel_jobs) == (6, 3)
    assert attached.metric_definitions == original.metric_definitions
    # The ranges as described are the ranges as sent; the SDK rebuilds them without their
    # scaling (its _prepare_parameter_ranges_from_job_description), so bounds are compared.
    assert attached.describe()["HyperParameterTuningJobConfig"][
        "ParameterRanges"] == original.hyperparameter_ranges()
    assert bounds(attached) == bounds(original)
    est = attached.estimator
    assert est.image_uri == original.estimator.image_uri
    assert est.role == ROLE
    assert est.hyperparameters() == {"epochs": "3"}
    assert (est.instance_count, est.instance_type) == (1, "ml.m5.large")


def test_analytics_dataframe_has_every_trial_and_its_objective(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    frame = result["frame"]
    assert len(frame) == 6
    assert {"lr", "layers", "optimizer", "TrainingJobName", "TrainingJobStatus",
            "FinalObjectiveValue", "TrainingStartTime", "TrainingEndTime",
            "TrainingElapsedTimeSeconds"} <= set(frame.columns)
    for row in frame.to_dict("records"):
        assert row["TrainingJobStatus"] == "Completed"
        # The SDK turns numeric hyperparameters into floats.
        assert row["FinalObjectiveValue"] == objective(row["lr"], int(row["layers"]),
                                                       row["optimizer"])
        assert 0 < row["TrainingElapsedTimeSeconds"] < 120
    ordered = frame.sort_values("FinalObjectiveValue")
    assert ordered.iloc[0]["TrainingJobName"] == result["best"]
    # ListTrainingJobsForHyperParameterTuningJob sorted by the objective says the same.
    listed = runs.sagemaker().list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=runs.names["tuner"], SortBy="FinalObjectiveMetricValue",
        SortOrder="Ascending")["TrainingJobSummaries"]
    assert [t["TrainingJobName"] for t in listed] == list(ordered["TrainingJobName"])


def test_best_estimator_is_attached_to_the_best_job(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    est = result["best_estimator"]
    best = result["best"]
    assert est.latest_training_job.name == best
    assert est.model_data == f"s3://{BUCKET}/{best}/output/model.tar.gz"
    # Estimator.attach keeps a trial's hyperparameters as described, the objective's name
    # included (as on AWS; only HyperparameterTuner.attach takes it out).
    assert est.hyperparameters() == {
        **result["tuner"].describe()["BestTrainingJob"]["TunedHyperParameters"],
        "epochs": "3", "_tuning_objective_metric": "validation:loss"}
    model = json.loads(runs.read_tar(est.model_data)["model.json"])
    tuned = result["tuner"].describe()["BestTrainingJob"]["TunedHyperParameters"]
    assert {k: model[k] for k in ("lr", "layers", "optimizer")} == tuned
    assert model["files"] == ["a.csv", "nested/b.csv"]


def test_deploy_of_the_best_predicts_with_its_model_and_deletes(runs: Runs) -> None:
    result = runs.outcomes["tuner"].get()
    # deploy() names the endpoint (and its model) after the best training job.
    assert result["endpoint"] == result["best"]
    tuned = result["tuner"].describe()["BestTrainingJob"]["TunedHyperParameters"]
    answer = result["answer"]
    assert answer["body"] == "1,2,3"
    assert {k: answer["model"][k] for k in ("lr", "layers", "optimizer")} == tuned
    sagemaker = runs.sagemaker()
    assert sagemaker.list_models(NameContains=result["best"])["Models"] == []
    deadline = time.monotonic() + 60
    while sagemaker.list_endpoints(NameContains=result["best"])["Endpoints"]:
        assert time.monotonic() < deadline, "the endpoint was never deleted"
        time.sleep(0.1)


def test_framework_tuner_quotes_hyperparameters_and_the_script_sees_them_decoded(
        runs: Runs) -> None:
    result = runs.outcomes["framework"].get()
    name = runs.names["framework"]
    described = result["tuner"].describe()
    assert described["HyperParameterTuningJobStatus"] == "Completed", described.get(
        "FailureReason")
    static = described["TrainingJobDefinition"]["StaticHyperParameters"]
    code = f"s3://{BUCKET}/{name}/source/sourcedir.tar.gz"
    assert static["sagemaker_submit_directory"] == json.dumps(code)
    assert static["sagemaker_program"] == '"train.py"'
    assert static["sagemaker_estimator_class_name"] == '"SKLearn"'
    assert static["epochs"] == "2"
    categorical = described["HyperParameterTuningJobConfig"]["ParameterRanges"][
        "CategoricalParameterRanges"]
    assert categorical == [{"Name": "optimizer",
                            "Values": [json.dumps(o) for o in OPTIMIZERS]}]
    trials = runs.trials(name)
    assert len(trials) == 4
    for trial in trials:
        hp = trial["TunedHyperParameters"]
        assert hp["optimizer"] in {json.dumps(o) for o in OPTIMIZERS}
        expected = 1 / (1 + objective(float(hp["lr"]), int(hp["layers"]),
                                      json.loads(hp["optimizer"])))
        assert trial["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == expected
    best = max(trials, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    est = result["best_estimator"]
    assert est.latest_training_job.name == best["TrainingJobName"]
    assert type(est).__name__ == "SKLearn"
    assert est.entry_point == "train.py"
    seen = json.loads(runs.read_tar(est.model_data)["seen.json"])
    tuned = best["TunedHyperParameters"]
    # The toolkit decoded every JSON-quoted value: the script got plain ones.
    assert seen["hps"] == {"epochs": 2, "lr": json.loads(tuned["lr"]),
                           "layers": json.loads(tuned["layers"]),
                           "optimizer": json.loads(tuned["optimizer"])}
    assert seen["helper"] == "shipped with the code"
    frame = result["frame"]
    assert len(frame) == 4
    assert set(frame["optimizer"]) <= {json.dumps(o) for o in OPTIMIZERS}
    attached = result["attached"].get()
    assert type(attached.estimator).__name__ == "SKLearn"
    assert attached.objective_type == "Maximize"
    # (The SDK's own round trip quotes the categorical values a second time: attach rebuilds
    # them from the quoted values described, and a framework tuner quotes what it is given.)
    assert bounds(attached) == {**bounds(result["tuner"]), "optimizer": tuple(
        json.dumps(o) for o in OPTIMIZERS)}


def test_grid_runs_every_categorical_combination_once(runs: Runs) -> None:
    result = runs.outcomes["grid"].get()
    described = result["tuner"].describe()
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["HyperParameterTuningJobConfig"]["ResourceLimits"][
        "MaxNumberOfTrainingJobs"] == 4
    points = sorted((t["TunedHyperParameters"]["layers"], t["TunedHyperParameters"]["optimizer"])
                    for t in runs.trials(runs.names["grid"]))
    assert points == [("2", "adam"), ("2", "sgd"), ("3", "adam"), ("3", "sgd")]
    best = described["BestTrainingJob"]
    assert result["best"] == best["TrainingJobName"]
    assert best["TunedHyperParameters"] == {"layers": "3", "optimizer": "adam"}
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == objective(
        0.01, 3, "adam")
    assert len(result["frame"]) == 4
