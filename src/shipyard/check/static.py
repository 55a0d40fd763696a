"""Static checks: rules read from the image config and layers, with nothing run.

Pure functions of :class:`ImageFacts`, so each rule is tested on hand-made facts as well as on
real images. One mistake gives one failure: a ``sh -c`` ENTRYPOINT (what Docker makes of the
shell form) is reported by ``entrypoint-exec-form`` only, and ``entrypoint-no-wrapper`` covers
init programs and shell *scripts* in front of the program.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from shipyard.check import model
from shipyard.check.image import ImageConfig
from shipyard.check.layers import (
    SHELLS,
    FileSystem,
    ImageFiles,
    SecretFinding,
    is_shell_shebang,
    scan_text,
)
from shipyard.check.model import CheckInfo, CheckResult, Status
from shipyard.contract.serving import (
    BIND_TO_PORT_LABEL,
    CAPABILITY_LABEL_PREFIX,
    MULTI_MODEL_LABEL,
)

__all__ = [
    "BIND_TO_PORT_LABEL",
    "DEFAULT_MAX_SIZE_BYTES",
    "MULTI_MODEL_LABEL",
    "ImageFacts",
    "StaticCheck",
    "is_shell_form",
    "run_static",
]

DEFAULT_MAX_SIZE_BYTES = 10 * 1000**3
#: Init programs that must not be PID 1 in front of train/serve.
INITS = frozenset({"tini", "tini-static", "dumb-init", "catatonit", "docker-init", "s6-svscan"})
#: Environment variables that hold AWS credentials.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
OPT_ML = "opt/ml"
_SHOWN = 5
# A script that ends by exec-ing its arguments or program, or traps and forwards signals.
_FORWARDS = re.compile(r"(?m)^\s*(?:exec\s+\S|trap\s.*\b(?:TERM|15)\b)")


@dataclass(frozen=True)
class ImageFacts:
    config: ImageConfig
    files: ImageFiles

    @property
    def fs(self) -> FileSystem:
        return self.files.filesystem


StaticCheck = Callable[[ImageFacts], CheckResult]


def _result(info: CheckInfo, status: Status, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(info, status, detail, fix)


def _program(argv: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The program that really runs (``env`` skipped) and its arguments."""
    if argv and posixpath.basename(argv[0]) == "env":
        rest = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        if rest:
            index = argv.index(rest[0])
            return rest[0], argv[index + 1:]
    return (argv[0], argv[1:]) if argv else ("", ())


def is_shell_form(argv: tuple[str, ...]) -> bool:
    """``[sh, -c, ...]``: Docker's shell form, or the same written by hand."""
    program, args = _program(argv)
    return posixpath.basename(program) in SHELLS and any(
        a == "-c" or (a.startswith("-") and not a.startswith("--") and "c" in a)
        for a in args[:2])


def check_entrypoint_exec_form(facts: ImageFacts) -> CheckResult:
    info = model.ENTRYPOINT_EXEC_FORM
    config, fs = facts.config, facts.fs
    entrypoint = config.entrypoint
    if not entrypoint:
        found = {name: fs.which(name, config.path_dirs) for name in ("train", "serve")}
        present = [f"{name} -> {where}" for name, where in found.items() if where]
        if present:
            return _result(info, Status.PASS, "no ENTRYPOINT; on PATH: " + ", ".join(present))
        return _result(info, Status.FAIL,
                       "no ENTRYPOINT, and neither train nor serve is an executable on PATH "
                       f"({':'.join(config.path_dirs)}): `docker run IMAGE train` cannot start")
    if is_shell_form(entrypoint):
        return _result(info, Status.FAIL,
                       f"ENTRYPOINT is shell form: {list(entrypoint)}. The shell is PID 1, "
                       "SageMaker's train/serve argument becomes its $0, and SIGTERM may "
                       "never reach the program")
    program, _ = _program(entrypoint)
    where = fs.which(program, config.path_dirs)
    if where is None:
        return _result(info, Status.FAIL,
                       f"ENTRYPOINT {list(entrypoint)}: {program} is not an executable in the "
                       "image (PATH: " + ":".join(config.path_dirs) + ")",
                       "Point ENTRYPOINT at a program that exists in the image (exec form).")
    return _result(info, Status.PASS, f"ENTRYPOINT {list(entrypoint)} ({program} -> {where})")


def check_entrypoint_no_wrapper(facts: ImageFacts) -> CheckResult:
    info = model.ENTRYPOINT_NO_WRAPPER
    config, fs = facts.config, facts.fs
    entrypoint = config.entrypoint
    if not entrypoint:
        return _result(info, Status.PASS, "no ENTRYPOINT: train/serve run as PID 1")
    if is_shell_form(entrypoint):
        return _result(info, Status.PASS,
                       "sh -c entrypoint: reported by entrypoint-exec-form")
    program, args = _program(entrypoint)
    name = posixpath.basename(program)
    if name in INITS:
        return _result(info, Status.FAIL,
                       f"{name} is PID 1 in front of {list(args) or 'the command'} "
                       f"(ENTRYPOINT {list(entrypoint)}): SageMaker documents that tini "
                       "cannot be the entry point")
    script: str | None = None
    if name in SHELLS:
        script = next((a for a in args if not a.startswith("-")), None)
        if script is None:
            return _result(info, Status.FAIL,
                           f"a shell ({program}) is the entry point: "
                           f"ENTRYPOINT {list(entrypoint)}")
    else:
        where = fs.which(program, config.path_dirs)
        entry = fs.get(where) if where else None
        if entry is not None and entry.shebang and is_shell_shebang(entry.shebang):
            script = where
    if script is None:
        return _result(info, Status.PASS, f"{program} is PID 1")
    entry = fs.get(script) if script.startswith("/") else fs.get(
        posixpath.join(config.working_dir or "/", script))
    text = entry.content.decode("utf-8", "replace") if entry and entry.content else None
    if text is not None and _FORWARDS.search(text):
        return _result(info, Status.PASS,
                       f"shell script {script} is the entry point and execs (or traps SIGTERM)")
    seen = "its text could not be read" if text is None else "it neither execs nor traps TERM"
    return _result(info, Status.WARN,
                   f"shell script {script} is PID 1 in front of the program and {seen}: "
                   "SIGTERM stops at the shell (train-sigterm / serve-sigterm-drain run it)")


def _passwd(fs: FileSystem) -> dict[str, int]:
    entry = fs.get("etc/passwd")
    users: dict[str, int] = {}
    if entry is None or entry.content is None:
        return users
    for line in entry.content.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            users.setdefault(fields[0], int(fields[2]))
    return users


def check_user_non_root(facts: ImageFacts) -> CheckResult:
    """Root is a warning: SageMaker runs root images as it runs any other, so only a security
    default is at stake. A user missing from /etc/passwd fails: no container can start."""
    info = model.USER_NON_ROOT
    user = facts.config.user.strip()
    if not user:
        return _result(info, Status.WARN, "no USER: the container runs as root (uid 0)")
    name = user.split(":", 1)[0]
    if name.isdigit():
        uid = int(name)
        if uid == 0:
            return _result(info, Status.WARN, f"USER {user}: uid 0 is root")
        return _result(info, Status.PASS, f"USER {user} (uid {uid})")
    users = _passwd(facts.fs)
    if name not in users:
        return _result(info, Status.FAIL,
                       f"USER {user}: no such user in /etc/passwd, so containers cannot start",
                       "Create the user in the image (useradd) or use a numeric uid.")
    if users[name] == 0:
        return _result(info, Status.WARN, f"USER {user} has uid 0 in /etc/passwd: it is root")
    return _result(info, Status.PASS, f"USER {user} (uid {users[name]})")


def check_opt_ml_empty(facts: ImageFacts) -> CheckResult:
    info = model.OPT_ML_EMPTY
    entries = facts.fs.under(OPT_ML)
    baked = [e for e in entries if e.kind != "dir"]
    if baked:
        shown = ", ".join("/" + e.path for e in baked[:_SHOWN])
        more = f" and {len(baked) - _SHOWN} more" if len(baked) > _SHOWN else ""
        return _result(info, Status.FAIL,
                       f"{len(baked)} file(s) baked under /opt/ml: {shown}{more}; SageMaker "
                       "mounts over /opt/ml at run time")
    if entries:
        return _result(info, Status.PASS,
                       f"only empty directories under /opt/ml ({len(entries)})")
    return _result(info, Status.PASS, "nothing under /opt/ml")


def check_no_credentials_env(facts: ImageFacts) -> CheckResult:
    info = model.NO_CREDENTIALS_ENV
    problems: list[str] = []
    for key, value in sorted(facts.config.env.items()):
        if key in CREDENTIAL_ENV and value.strip():
            problems.append(f"ENV {key} is set")
            continue
        problems += [f"ENV {key} holds an {f.kind} ({f.excerpt})"
                     for f in scan_text(f"ENV {key}", f"{key}={value}".encode())]
    if problems:
        return _result(info, Status.FAIL, "; ".join(problems))
    return _result(info, Status.PASS, f"{len(facts.config.env)} variables, no AWS credentials")


def _describe(finding: SecretFinding, files: ImageFiles) -> str:
    where = f"/{finding.path} in layer {finding.layer + 1}/{len(files.layers)}"
    if files.filesystem.entry(finding.path) is None:
        where += " (deleted by a later layer, but still shipped in the image)"
    return f"{finding.kind} {finding.excerpt} in {where}"


def check_no_credentials_layers(facts: ImageFacts) -> CheckResult:
    info = model.NO_CREDENTIALS_LAYERS
    findings = facts.files.secrets()
    if findings:
        shown = "; ".join(_describe(f, facts.files) for f in findings[:_SHOWN])
        more = f"; and {len(findings) - _SHOWN} more" if len(findings) > _SHOWN else ""
        return _result(info, Status.FAIL, shown + more)
    files = sum(1 for layer in facts.files.layers for e in layer.entries.values()
                if e.kind == "file")
    return _result(info, Status.PASS,
                   f"{files} files in {len(facts.files.layers)} layers scanned, none found")


def check_capability_labels(facts: ImageFacts) -> CheckResult:
    info = model.CAPABILITY_LABELS
    labels = {k: v for k, v in facts.config.labels.items()
              if k.startswith(CAPABILITY_LABEL_PREFIX)}
    bad = [f"{k}={v!r}" for k, v in sorted(labels.items()) if v not in ("true", "false")]
    if bad:
        return _result(info, Status.FAIL,
                       "capability labels must be \"true\" or \"false\": " + ", ".join(bad))
    declared = sorted(k[len(CAPABILITY_LABEL_PREFIX):] for k, v in labels.items() if v == "true")
    if not declared:
        return _result(info, Status.PASS, "no capability labels")
    cannot = _cannot_serve(facts)
    if cannot:
        return _result(info, Status.FAIL,
                       "declares " + ", ".join(declared) + f", but {cannot}",
                       "Remove the capability labels from images that do not serve, or make "
                       "`docker run IMAGE serve` start a server.")
    return _result(info, Status.PASS,
                   "declares " + ", ".join(declared) + " (verified by the serve checks)")


def _cannot_serve(facts: ImageFacts) -> str:
    """Why ``docker run IMAGE serve`` cannot start a server, when that shows statically."""
    entrypoint = facts.config.entrypoint
    if not entrypoint:
        if facts.fs.which("serve", facts.config.path_dirs) is None:
            return "there is no ENTRYPOINT and no serve on PATH"
        return ""
    if posixpath.basename(_program(entrypoint)[0]) == "train":
        return f"ENTRYPOINT {list(entrypoint)} trains: `serve` would start training"
    return ""


def _size(size: int) -> str:
    return f"{size / 1000**3:.2f} GB" if size >= 1000**3 else f"{size / 1000**2:.0f} MB"


def check_image_size(facts: ImageFacts, max_bytes: int = DEFAULT_MAX_SIZE_BYTES) -> CheckResult:
    info = model.IMAGE_SIZE
    size = facts.config.size
    if size > max_bytes:
        return _result(info, Status.WARN, f"{_size(size)}, over the {_size(max_bytes)} threshold")
    return _result(info, Status.PASS, f"{_size(size)} (threshold {_size(max_bytes)})")


def run_static(facts: ImageFacts, *, max_size_bytes: int = DEFAULT_MAX_SIZE_BYTES
               ) -> list[CheckResult]:
    """Every static check, in registry order."""
    return [
        check_entrypoint_exec_form(facts),
        check_entrypoint_no_wrapper(facts),
        check_user_non_root(facts),
        check_opt_ml_empty(facts),
        check_no_credentials_env(facts),
        check_no_credentials_layers(facts),
        check_capability_labels(facts),
        check_image_size(facts, max_size_bytes),
    ]
