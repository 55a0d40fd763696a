"""``python -m shipyard.toolkit.train`` against a temp /opt/ml with real user scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.archives import make_tar_gz
from shipyard.contract.config_files import training_resource_config, write_json
from shipyard.contract.paths import OptMl
from tests.support.polling import until

TRAIN = [sys.executable, "-m", "shipyard.toolkit.train"]


class Job:
    """A temp contract root: config files, code and the toolkit run against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = OptMl.at(str(root))
        self.code = Path(self.layout.code_dir)
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))
        }
        self.env["SAGEMAKER_BASE_DIR"] = str(root)
        self.configure({})

    def configure(self, hps: dict[str, Any], channels: tuple[str, ...] = ("training",)) -> None:
        layout = self.layout
        write_json(Path(layout.hyperparameters_file), {k: str(v) for k, v in hps.items()})
        write_json(
            Path(layout.resource_config_file),
            training_resource_config("algo-1", ["algo-1"], "local"),
        )
        write_json(
            Path(layout.input_data_config_file),
            {c: {"TrainingInputMode": "File"} for c in channels},
        )

    def script(self, name: str, body: str, folder: Path | None = None) -> Path:
        path = (folder or self.code) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
        return path

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TRAIN, *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def failure(self) -> str:
        return Path(self.layout.failure_file).read_text(encoding="utf-8")

    @property
    def succeeded(self) -> bool:
        return Path(self.layout.success_file).exists()


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path / "opt-ml")


DUMP_ENV = """
import json, os, sys
out = {"argv": sys.argv[1:], "cwd": os.getcwd(),
       "env": {k: v for k, v in os.environ.items()
               if k.startswith(("SM_", "PYTHON", "SAGEMAKER_", "CURRENT_HOST"))}}
open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w").write(json.dumps(out))
"""


def _seen(job: Job) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads((Path(job.layout.model_dir) / "seen.json").read_text())
    return seen


def test_script_sees_sm_env_args_and_code_dir(job: Job) -> None:
    job.configure(
        {
            "epochs": "2",
            "lr": "0.1",
            "sagemaker_program": '"train.py"',
            "sagemaker_job_name": '"j1"',
        }
    )
    job.script("train.py", DUMP_ENV)
    result = job.run("train")  # ENTRYPOINT ["train"] + CMD train
    assert result.returncode == 0, result.stderr
    seen = _seen(job)
    assert seen["argv"] == ["--epochs", "2", "--lr", "0.1"]
    assert seen["cwd"] == str(job.code)
    env = seen["env"]
    assert env["SM_CHANNEL_TRAINING"] == f"{job.root}/input/data/training"
    assert env["SM_HPS"] == '{"epochs":2,"lr":0.1}'
    assert env["SM_CURRENT_HOST"] == env["CURRENT_HOST"] == "algo-1"
    assert env["SAGEMAKER_JOB_NAME"] == "j1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(job.code)
    assert job.succeeded and not Path(job.layout.failure_file).exists()
    assert Path(job.layout.output_data_dir).is_dir()


ARGPARSE = """
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int)
p.add_argument("--verbose", action="store_true")
p.add_argument("--dry-run", action="store_true")
a = p.parse_args()
open(os.path.join(os.environ["SM_MODEL_DIR"], "args.json"), "w").write(json.dumps(vars(a)))
"""


def test_argparse_store_true_fails_without_opt_in(job: Job) -> None:
    job.configure({"epochs": "3", "verbose": "true", "sagemaker_program": '"train.py"'})
    job.script("train.py", ARGPARSE)
    result = job.run()
    assert result.returncode == 2
    assert "unrecognized arguments: True" in job.failure


@pytest.mark.parametrize("via", ["env", "hyperparameter"])
def test_store_true_opt_in(job: Job, via: str) -> None:
    hps = {"epochs": "3", "verbose": "true", "dry-run": "false", "sagemaker_program": '"train.py"'}
    if via == "env":
        job.env["SHIPYARD_BOOL_FLAGS"] = "store_true"
    else:
        hps["sagemaker_bool_flags"] = '"store_true"'
    job.configure(hps)
    job.script("train.py", ARGPARSE)
    result = job.run()
    assert result.returncode == 0, result.stderr
    args = json.loads((Path(job.layout.model_dir) / "args.json").read_text())
    assert args == {"epochs": 3, "verbose": True, "dry_run": False}


def test_failure_file_exit_code_and_stderr_tail(job: Job) -> None:
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    job.script(
        "train.py",
        """
        import sys
        for i in range(30):
            print(f"progress line {i}", file=sys.stderr)
        raise SystemExit("ValueError: learning rate must be positive")
        """,
    )
    result = job.run()
    assert result.returncode == 1
    failure = job.failure
    lines = failure.splitlines()
    assert lines[0] == "ExecuteUserScriptError: the entry point exited with code 1"
    assert lines[1] == "ErrorMessage: ValueError: learning rate must be positive"
    assert lines[2].startswith("Command: ") and lines[2].endswith("train.py")
    assert "progress line 29" in failure and "progress line 5" not in failure
    assert "progress line 12" in result.stderr  # teed live, not only kept
    assert not job.succeeded


def test_exit_code_propagates_and_user_failure_file_is_kept(job: Job) -> None:
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    job.script(
        "train.py",
        """
        import os
        open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("my reason")
        raise SystemExit(3)
        """,
    )
    result = job.run()
    assert result.returncode == 3
    assert job.failure == "my reason"
    assert "exited with code 3" in result.stderr


def test_sigkill_is_reported_as_out_of_memory(job: Job) -> None:
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    job.script("train.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    result = job.run()
    assert result.returncode == 137
    assert "OutOfMemory: Process killed by SIGKILL (signal 9)" in job.failure.splitlines()[1]


def test_no_entry_point_is_a_clear_error(job: Job) -> None:
    result = job.run()
    assert result.returncode == 1
    assert job.failure.startswith("EntryPointError: no entry point: set the SAGEMAKER_PROGRAM")
    assert "Traceback" not in result.stderr


def test_missing_entry_point_file(job: Job) -> None:
    job.env["SAGEMAKER_PROGRAM"] = "nope.py"
    result = job.run()
    assert result.returncode == 1
    assert job.failure.startswith("EntryPointError: entry point nope.py not found")


def test_malformed_config_writes_failure(job: Job) -> None:
    Path(job.layout.resource_config_file).write_text("[oops", encoding="utf-8")
    result = job.run()
    assert result.returncode == 1
    assert job.failure.startswith("ValidationError: ")
    assert "resourceconfig.json is not valid JSON" in job.failure


def test_requirements_install_failure(job: Job) -> None:
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    job.env["PIP_NO_INDEX"] = "1"  # never touch the network, whatever pip.conf says
    job.script("train.py", "print('never runs')\n")
    job.script("requirements.txt", "./does-not-exist-pkg\n")
    result = job.run(timeout=120)
    assert result.returncode == 1
    lines = job.failure.splitlines()
    assert lines[0] == "InstallError: pip install -r requirements.txt exited with code 1"
    assert "does-not-exist-pkg" in job.failure
    assert "never runs" not in result.stdout


def test_submit_directory_tarball(job: Job, tmp_path: Path) -> None:
    source = tmp_path / "source"
    job.script("train.py", DUMP_ENV, folder=source)
    job.script("lib/helper.py", "VALUE = 42\n", folder=source)
    tarball = make_tar_gz(source, tmp_path / "sourcedir.tar.gz")
    job.configure(
        {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(str(tarball))}
    )
    result = job.run()
    assert result.returncode == 0, result.stderr
    assert (job.code / "lib" / "helper.py").read_text() == "VALUE = 42\n"
    assert _seen(job)["env"]["SM_MODULE_DIR"] == str(tarball)


def test_submit_directory_tarball_escaping_is_refused(job: Job, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload.py"
    payload.write_text("print('x')\n")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../escaped.py")
    job.env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(evil)
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    result = job.run()
    assert result.returncode == 1
    assert job.failure.startswith("UnsafeArchiveError: ")
    assert not (job.root / "escaped.py").exists()


def test_submit_directory_as_local_folder(job: Job, tmp_path: Path) -> None:
    source = tmp_path / "src-dir"
    job.script("train.py", DUMP_ENV, folder=source)
    job.env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(source)
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    result = job.run()
    assert result.returncode == 0, result.stderr
    assert _seen(job)["cwd"] == str(source)


def test_shell_entry_point(job: Job) -> None:
    job.configure({"epochs": "2", "sagemaker_program": '"train.sh"'})
    job.script(
        "train.sh",
        """
        #!/bin/sh
        echo "$@ $SM_HP_EPOCHS" > "$SM_MODEL_DIR/out.txt"
        """,
    )
    result = job.run()
    assert result.returncode == 0, result.stderr
    assert (Path(job.layout.model_dir) / "out.txt").read_text() == "--epochs 2 2\n"


# A PEP 517 backend with no build requirements, so pip builds the package offline, with
# build isolation, whatever setuptools/wheel the test interpreter has.
IN_TREE_BACKEND = """
import base64, hashlib, zipfile

NAME, VERSION = "trainer", "0.1"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}.py": open(f"{NAME}.py", "rb").read(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(f"{wheel_directory}/{wheel}", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel
"""


def test_python_package_entry_point(job: Job, tmp_path: Path) -> None:
    target = tmp_path / "site"
    # pip stays offline and out of the test venv: it installs into a temp target.
    job.env.update({"PIP_TARGET": str(target), "PIP_NO_INDEX": "1"})
    job.configure({"sagemaker_program": '"trainer.py"', "epochs": "5"})
    job.script("setup.py", "raise SystemExit('the in-tree backend builds this package')\n")
    job.script(
        "pyproject.toml",
        """
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]
        """,
    )
    job.script("backend.py", IN_TREE_BACKEND)
    job.script("trainer.py", DUMP_ENV)
    result = job.run(timeout=180)
    assert result.returncode == 0, result.stderr
    assert (target / "trainer.py").exists()  # pip install . ran
    assert _seen(job)["argv"] == ["--epochs", "5"]
    assert " -m trainer --epochs 5" in result.stderr


GRACEFUL = """
import os, signal, subprocess, sys, time
model = os.environ["SM_MODEL_DIR"]
# A grandchild in the same process group: it must get SIGTERM too.
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, sys, time
def bye(*_):
    open(os.path.join(sys.argv[1], "grandchild-term"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open(os.path.join(sys.argv[1], "grandchild-ready"), "w").close()
while True:
    time.sleep(0.05)
''', model])
def on_term(signum, frame):
    open(os.path.join(model, "checkpoint.pt"), "w").write("saved")
    child.wait(timeout=20)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(os.path.join(model, "ready"), "w").write(str(os.getpgid(0)))
while True:
    time.sleep(0.05)
"""


def _wait_for(*paths: Path, timeout: float = 30) -> None:
    until(f"{paths}", lambda: all(p.exists() for p in paths), timeout, poll=0.02)


@pytest.fixture
def started(job: Job, tmp_path: Path) -> Iterator[tuple[Job, subprocess.Popen[str], Path]]:
    job.env["SAGEMAKER_PROGRAM"] = "train.py"
    job.script("train.py", GRACEFUL)
    # Output to a file, not a pipe: if forwarding breaks, orphans holding a pipe would hang us.
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(TRAIN, env=job.env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield job, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        ready = Path(job.layout.model_dir) / "ready"
        if ready.exists() and ready.read_text():
            try:  # the script's group, should a broken toolkit have left it running
                os.killpg(int(ready.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_is_forwarded_to_process_group(
    started: tuple[Job, subprocess.Popen[str], Path], signum: int
) -> None:
    job, proc, log = started
    model = Path(job.layout.model_dir)
    _wait_for(model / "ready", model / "grandchild-ready")
    proc.send_signal(signum)
    proc.wait(timeout=30)
    stderr = log.read_text()
    if signum == signal.SIGINT:
        # The script only traps SIGTERM: KeyboardInterrupt ends it, and Python then dies by
        # SIGINT, so the toolkit reports 128 + 2 like a shell would.
        assert proc.returncode == 130
        assert "Process killed by SIGINT (signal 2)" in job.failure
        assert "KeyboardInterrupt" in job.failure
        return
    assert proc.returncode == 0, stderr
    assert (model / "checkpoint.pt").read_text() == "saved"
    assert (model / "grandchild-term").exists()
    assert "forwarding SIGTERM" in stderr
    assert job.succeeded
