"""Images for ``shipyard check``: one correct image and a set that each break exactly one rule
(failing its check, or warning for a rule SageMaker does not enforce).

Two bases, built once per engine and reused by content hash like every test image:
``check-base`` (the base image, the toolkit and a user ``app`` with uid 1000) for images that
train and serve with Shipyard's toolkit, and ``check-plain`` (the base image and the user,
no toolkit) for servers written by hand. Each image below adds a small layer on one of them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.support.images import WHEEL_CACHE, build_context, build_image

BIND_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
MULTI_MODEL_LABEL = "com.amazonaws.sagemaker.capabilities.multi-models"
DEB_CACHE = WHEEL_CACHE.parent / "debs"

_USER = (
    "RUN echo 'app:x:1000:1000:app:/home/app:/usr/sbin/nologin' >> /etc/passwd \\\n"
    " && echo 'app:x:1000:' >> /etc/group && mkdir -p /home/app && chown 1000:1000 /home/app"
)

# Training (run as a script by the toolkit's `train`), processing (`main.py process`) and the
# inference functions (imported by the toolkit's `serve`), in one module.
MAIN_PY = '''import json, os, signal, sys, time

IGNORE_SIGTERM = False  # the sigterm-ignored image flips this
TRAIN_SECONDS_MAX = float("inf")  # the sigterm-ignored-short image caps how long training takes


def rows(folder):
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            out += [[float(x) for x in line.split(",")] for line in f if line.strip()]
    if not out:
        raise ValueError(f"no rows in {folder}")
    return out


def train():
    with open("/opt/ml/input/config/hyperparameters.json") as f:
        hp = json.load(f)
    if float(hp.get("learning_rate", "0.1")) <= 0:
        raise ValueError("learning_rate must be positive")
    data = rows(os.environ.get("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training"))
    if IGNORE_SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("training", len(data), "rows", flush=True)
    time.sleep(min(float(hp.get("sleep", "0")), TRAIN_SECONDS_MAX))
    mean = sum(map(sum, data)) / sum(map(len, data))
    model_dir = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    with open(os.path.join(model_dir, "model.json"), "w") as f:
        json.dump({"mean": mean}, f)


def process():
    base = "/opt/ml/processing"
    data = rows(os.path.join(base, "input", "data"))
    os.makedirs(os.path.join(base, "output", "result"), exist_ok=True)
    with open(os.path.join(base, "output", "result", "summary.json"), "w") as f:
        json.dump({"rows": len(data)}, f)


def model_fn(model_dir):
    time.sleep(1.0)  # loading takes a moment: /ping must wait for it
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)


def transform_fn(model, data, content_type, accept):
    request = json.loads(data)
    if request == "slow":
        time.sleep(3.0)
    return json.dumps({"mean": model["mean"], "echo": request}), "application/json"


if __name__ == "__main__":
    process() if sys.argv[1:] == ["process"] else train()
'''

# A `train` that does not use the toolkit and, on bad input, exits 1 without a failure file.
TRAIN_WITHOUT_FAILURE_FILE = '''#!/usr/bin/env python3
import signal, sys
# PID 1 gets no default SIGTERM action: exit on it, as the contract asks.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
sys.path.insert(0, "/opt/program")
import main
try:
    main.train()
except Exception as exc:
    print("training failed:", exc, file=sys.stderr)
    sys.exit(1)
'''

# A `train` like the one in AWS's scikit_bring_your_own example: PID 1 with no SIGTERM handler,
# so the signal is dropped (PID 1 gets no default action), and training that takes its own few
# seconds whatever the hyperparameters ask: it finishes on its own 2 s after the check's
# SIGTERM (sent 2 s after the first output line), within the 3 s grace of the tests.
TRAIN_IGNORING_SIGTERM = '''#!/usr/bin/env python3
import sys
sys.path.insert(0, "/opt/program")
import main
main.TRAIN_SECONDS_MAX = 4.0
try:
    main.train()
except Exception as exc:
    with open("/opt/ml/output/failure", "w") as f:
        f.write(f"training failed: {exc}")
    print("training failed:", exc, file=sys.stderr)
    sys.exit(1)
'''

# A hand-written server: stdlib only. The model takes LOAD_SECONDS to load (long enough that
# the checker's first /ping comes before it, even on a busy machine); PING_BEFORE_LOAD=1
# answers /ping 200 while it is still loading; IGNORE_BIND_PORT=1 listens on 8080 whatever SAGEMAKER_BIND_TO_PORT says.
# SIGTERM drains: the request in flight completes, then the process exits 0.
PLAIN_SERVE = r'''#!/usr/bin/env python3
import json, os, signal, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "1.5"))
loaded = threading.Event()
threading.Thread(target=lambda: (time.sleep(LOAD_SECONDS), loaded.set()), daemon=True).start()
lies = os.environ.get("PING_BEFORE_LOAD") == "1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            self.answer(200 if lies or loaded.is_set() else 503)
        else:
            self.answer(404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not loaded.is_set():
            return self.answer(503, b'{"error": "model not loaded"}')
        if json.loads(body or b"null") == "slow":
            time.sleep(3.0)
        self.answer(200, json.dumps({"echo": json.loads(body or b"null")}).encode())


class Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() waits for the requests in flight


port = 8080
if os.environ.get("IGNORE_BIND_PORT") != "1":
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
server = Server(("0.0.0.0", port), Handler)
signal.signal(signal.SIGTERM,
              lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
server.serve_forever()
server.server_close()
'''

#: Each broken image and the one check it must fail.
BREAKS = {
    "shell-form": "entrypoint-exec-form",
    "tini": "entrypoint-no-wrapper",
    "opt-ml": "opt-ml-empty",
    "secret-layer": "no-credentials-layers",
    "sigterm-ignored": "train-sigterm",
    "sigterm-ignored-short": "train-sigterm",
    "no-failure-file": "train-failure-file",
    "ping-before-load": "serve-ping-ready",
    "wrong-port": "serve-bind-to-port",
}
#: Each image that breaks a rule SageMaker does not enforce, and the one check that warns.
WARNS = {
    "root": "user-non-root",
}

_SERVE_FILES = {"serve": PLAIN_SERVE}
_SERVE_BODY = "COPY serve /usr/local/bin/serve\nRUN chmod 755 /usr/local/bin/serve"
_LABELS_OK = f'LABEL {BIND_LABEL}="true" {MULTI_MODEL_LABEL}="true"'
_PROGRAM = ("COPY main.py /opt/program/main.py\n"
            "ENV SAGEMAKER_PROGRAM=main.py SAGEMAKER_SUBMIT_DIRECTORY=/opt/program "
            "PYTHONUNBUFFERED=1")


def fake_credentials() -> str:
    """An AWS credentials file with well-formed but made-up keys (built at run time, so the
    source holds no string a secret scanner would flag)."""
    key_id = "AKIA" + "SHIPYARDTESTKEY1"
    secret = "shipyard" + "TestSecretNotAKey" + "0" * 15
    return f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"


@dataclass(frozen=True)
class Spec:
    """An image to build: files, the Dockerfile body, which base, and what it breaks."""

    name: str
    body: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    plain: bool = False
    #: What the image can do, passed as --train / --serve.
    stages: tuple[str, ...] = ("train", "serve")

    @property
    def breaks(self) -> str | None:
        """The one check this image must fail or warn on (None: the correct image)."""
        return BREAKS.get(self.name) or WARNS.get(self.name)


def debian_package(name: str) -> Path:
    """A .deb from Debian's archive, downloaded once on the host (containers have no network)."""
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(DEB_CACHE.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    command = ["apt-get", "download", name]
    if subprocess.run(command, cwd=DEB_CACHE, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(command, cwd=DEB_CACHE, check=True, capture_output=True)
    return sorted(DEB_CACHE.glob(f"{name}_*.deb"))[-1]


def specs() -> list[Spec]:
    tini = debian_package("tini")
    main = {"main.py": MAIN_PY}
    correct = f"{_PROGRAM}\n{_LABELS_OK}\nUSER 1000:1000"
    return [
        Spec("correct", correct, main),
        Spec("shell-form", f'{correct}\nENTRYPOINT exec "$0" "$@"', main),
        Spec("tini", f"COPY {tini.name} /tmp/\nRUN dpkg -i /tmp/{tini.name} && rm /tmp/*.deb\n"
             f'{correct}\nENTRYPOINT ["/usr/bin/tini", "--"]',
             {**main, tini.name: tini.read_bytes()}),
        Spec("root", f"{_PROGRAM}\n{_LABELS_OK}", main),
        Spec("opt-ml", "RUN mkdir -p /opt/ml/model && echo weights > /opt/ml/model/baked.bin\n"
             + correct, main),
        Spec("secret-layer", "COPY credentials /home/app/.aws/credentials\n"
             "RUN rm -rf /home/app/.aws\n" + correct,
             {**main, "credentials": fake_credentials()}),
        Spec("sigterm-ignored", correct,
             {"main.py": MAIN_PY.replace("IGNORE_SIGTERM = False", "IGNORE_SIGTERM = True")}),
        Spec("no-failure-file", "COPY train /usr/local/bin/train\n"
             "RUN chmod 755 /usr/local/bin/train\n" + correct,
             {**main, "train": TRAIN_WITHOUT_FAILURE_FILE}),
        Spec("sigterm-ignored-short", "COPY train /usr/local/bin/train\n"
             "RUN chmod 755 /usr/local/bin/train\n" + correct,
             {**main, "train": TRAIN_IGNORING_SIGTERM}, stages=("train",)),
        Spec("ping-before-load", f"{_SERVE_BODY}\nENV PING_BEFORE_LOAD=1 LOAD_SECONDS=4\nUSER 1000:1000",
             _SERVE_FILES, plain=True, stages=("serve",)),
        Spec("wrong-port", f'{_SERVE_BODY}\nENV IGNORE_BIND_PORT=1\nLABEL {BIND_LABEL}="true"\n'
             "USER 1000:1000", _SERVE_FILES, plain=True,
             stages=("serve",)),
    ]


def build_from(client: docker.DockerClient, name: str, base: str,
               files: dict[str, str | bytes], body: str) -> str:
    """``shipyard-test/check-<name>:<hash>`` FROM ``base`` (itself tagged by content)."""
    context = {k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()}
    context["Dockerfile"] = f"FROM {base}\n{body}\n".encode()
    return build_context(client, f"shipyard-test/check-{name}", context, mode=0o644)


def build_check_images(client: docker.DockerClient) -> dict[str, tuple[Spec, str]]:
    """Every image of :func:`specs`, keyed by name, with its tag."""
    toolkit_base = build_image(client, "check-base", {}, _USER)
    plain_base = build_image(client, "check-plain", {}, _USER, with_toolkit=False)
    return {
        spec.name: (spec, build_from(client, spec.name, plain_base if spec.plain
                                     else toolkit_base, spec.files, spec.body))
        for spec in specs()
    }
