"""Settings: argument > SHIPYARD_* environment > <data_dir>/config.json > default, with sources."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import ValidationError
from shipyard.settings import Settings, Source


def _config(data_dir: Path, document: Any) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "config.json").write_text(json.dumps(document), encoding="utf-8")


def _names() -> list[str]:
    return [f.name for f in fields(Settings) if f.name != "sources"]


def test_defaults_record_default_sources(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path)}, environ={})
    assert settings.data_dir == tmp_path
    assert settings.runtime == "auto"
    assert settings.region == "us-east-1"
    assert settings.stop_grace_seconds == 120.0
    assert settings.remove_containers is True
    assert settings.s3_endpoint_url is None
    assert settings.sources["data_dir"] is Source.ARGUMENT
    assert {n for n in _names() if n != "data_dir"} == {
        n for n, source in settings.sources.items() if source is Source.DEFAULT}
    assert set(settings.sources) == set(_names())


def test_default_data_dir_is_under_home(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # HOME is the user's, not a setting: point it at an empty folder so no real file is read.
    monkeypatch.setenv("HOME", str(tmp_path))
    _config(tmp_path / ".shipyard", {"region": "from-home"})
    settings = Settings.load(environ={})
    assert settings.data_dir == tmp_path / ".shipyard"
    assert settings.region == "from-home"
    assert settings.sources["data_dir"] is Source.DEFAULT


@pytest.mark.parametrize(
    ("argument", "env", "file", "value", "source"),
    [
        ("eu-west-1", "eu-west-2", "eu-west-3", "eu-west-1", Source.ARGUMENT),
        (None, "eu-west-2", "eu-west-3", "eu-west-2", Source.ENV),
        (None, None, "eu-west-3", "eu-west-3", Source.CONFIG_FILE),
        (None, None, None, "us-east-1", Source.DEFAULT),
    ],
    ids=["argument-wins", "env-beats-file", "file-beats-default", "default"],
)
def test_precedence(tmp_path: Path, argument: str | None, env: str | None, file: str | None,
                    value: str, source: Source) -> None:
    if file is not None:
        _config(tmp_path, {"region": file})
    environ = {"SHIPYARD_DATA_DIR": str(tmp_path)}
    if env is not None:
        environ["SHIPYARD_REGION"] = env
    settings = Settings.load({"region": argument}, environ=environ)
    assert settings.region == value
    assert settings.sources["region"] is source
    assert settings.sources["data_dir"] is Source.ENV
    assert settings.explain()["region"] == {"value": value, "source": source.value}


def test_each_setting_is_read_from_every_layer(tmp_path: Path) -> None:
    values = {"runtime": "process", "stop_grace_seconds": 5, "transfer_workers": 3,
              "remove_containers": False, "scope": "team-a", "account_id": "123456789012",
              "s3_endpoint_url": "http://127.0.0.1:9000"}
    _config(tmp_path, values)
    from_file = Settings.load({"data_dir": tmp_path}, environ={})
    environ = {f"SHIPYARD_{k.upper()}": str(v) for k, v in values.items()}
    from_env = Settings.load({"data_dir": tmp_path / "elsewhere"}, environ=environ)
    from_args = Settings.load({"data_dir": tmp_path / "elsewhere", **values}, environ={})
    for settings in (from_file, from_env, from_args):
        assert settings.runtime == "process"
        assert settings.stop_grace_seconds == 5.0
        assert settings.transfer_workers == 3
        assert settings.remove_containers is False
        assert settings.scope == "team-a"
        assert settings.account_id == "123456789012"
        assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert {from_file.sources[k] for k in values} == {Source.CONFIG_FILE}
    assert {from_env.sources[k] for k in values} == {Source.ENV}
    assert {from_args.sources[k] for k in values} == {Source.ARGUMENT}


def test_none_arguments_fall_through(tmp_path: Path) -> None:
    # click passes every option, None when not given: that must not count as an argument.
    settings = Settings.load({"data_dir": str(tmp_path), "region": None, "runtime": None},
                             environ={"SHIPYARD_RUNTIME": "docker"})
    assert settings.runtime == "docker"
    assert settings.sources["runtime"] is Source.ENV
    assert settings.sources["region"] is Source.DEFAULT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True),
     ("0", False), ("False", False), ("no", False), ("off", False)],
)
def test_boolean_spellings(tmp_path: Path, raw: str, expected: bool) -> None:
    settings = Settings.load({"data_dir": tmp_path},
                             environ={"SHIPYARD_REMOVE_CONTAINERS": raw})
    assert settings.remove_containers is expected


def test_empty_optional_strings_mean_none(tmp_path: Path) -> None:
    _config(tmp_path, {"s3_endpoint_url": "http://from-file"})
    settings = Settings.load({"data_dir": tmp_path},
                             environ={"SHIPYARD_S3_ENDPOINT_URL": "", "SHIPYARD_SCOPE": ""})
    # An empty variable is an explicit "none", overriding the file.
    assert settings.s3_endpoint_url is None
    assert settings.sources["s3_endpoint_url"] is Source.ENV
    assert settings.scope is None


@pytest.mark.parametrize(
    ("setting", "raw"),
    [
        ("transfer_workers", "many"),
        ("transfer_workers", "2.5"),
        ("transfer_workers", "0"),
        ("transfer_workers", "-3"),
        ("stop_grace_seconds", "soon"),
        ("stop_grace_seconds", "-1"),
        ("stop_grace_seconds", "nan"),
        ("stop_grace_seconds", "inf"),
        ("remove_containers", "maybe"),
        ("runtime", "nomad"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, setting: str, raw: str) -> None:
    for layer in ("argument", "env", "file"):
        overrides: dict[str, Any] = {"data_dir": tmp_path}
        environ: dict[str, str] = {}
        if layer == "argument":
            overrides[setting] = raw
        elif layer == "env":
            environ[f"SHIPYARD_{setting.upper()}"] = raw
        else:
            _config(tmp_path, {setting: raw})
        with pytest.raises(ValidationError, match=setting):
            Settings.load(overrides, environ=environ)
        (tmp_path / "config.json").unlink(missing_ok=True)


def test_relative_data_dir_becomes_absolute(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from_arg = Settings.load({"data_dir": "state"}, environ={})
    from_env = Settings.load(environ={"SHIPYARD_DATA_DIR": "sub/state"})
    assert from_arg.data_dir == tmp_path / "state"
    assert from_env.data_dir == tmp_path / "sub" / "state"
    assert from_arg.data_dir.is_absolute() and from_env.data_dir.is_absolute()


def test_config_file_is_read_from_the_chosen_data_dir(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _config(tmp_path / "state", {"region": "ap-south-1"})
    assert Settings.load({"data_dir": "state"}, environ={}).region == "ap-south-1"
    assert Settings.load(environ={"SHIPYARD_DATA_DIR": "state"}).region == "ap-south-1"


def test_empty_data_dir_is_refused(tmp_path: Path) -> None:
    # "" would otherwise read the default folder's config file but keep state in the cwd.
    with pytest.raises(ValidationError, match="data_dir"):
        Settings.load(environ={"SHIPYARD_DATA_DIR": ""})


def test_config_file_cannot_move_the_data_dir(tmp_path: Path) -> None:
    # The file lives in the data directory; a data_dir inside it would split state in two.
    _config(tmp_path, {"data_dir": str(tmp_path / "other")})
    with pytest.raises(ValidationError, match="data_dir"):
        Settings.load({"data_dir": tmp_path}, environ={})


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '"a string"', "42", "null"],
    ids=["invalid", "list", "string", "number", "null"],
)
def test_config_file_must_be_a_json_object(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError, match="config.json"):
        Settings.load({"data_dir": tmp_path}, environ={})


def test_config_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ValidationError, match="config.json"):
        Settings.load({"data_dir": tmp_path}, environ={})


def test_load_does_not_create_the_data_dir(tmp_path: Path) -> None:
    Settings.load({"data_dir": tmp_path / "not-yet"}, environ={})
    assert not (tmp_path / "not-yet").exists()


def test_settings_are_frozen_and_compare_by_value(tmp_path: Path) -> None:
    a = Settings.load({"data_dir": tmp_path, "region": "x"}, environ={})
    b = Settings.load({"data_dir": tmp_path}, environ={"SHIPYARD_REGION": "x"})
    assert a == b  # sources differ, values do not
    with pytest.raises(AttributeError):
        a.region = "y"  # type: ignore[misc]


def test_file_roots_default_to_home_and_the_temporary_folder(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": tmp_path}, environ={})
    assert settings.file_roots == (Path.home(), Path(tempfile.gettempdir()))
    assert settings.sources["file_roots"] is Source.DEFAULT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"/srv/a{os.pathsep}/srv/b", ("/srv/a", "/srv/b")),
        ("/srv/a,/srv/b", ("/srv/a", "/srv/b")),
        (f" /srv/a , /srv/b{os.pathsep}", ("/srv/a", "/srv/b")),
        ("/srv/only", ("/srv/only",)),
        ("", ()),
    ],
    ids=["pathsep", "comma", "spaces-and-trailing", "one", "empty-means-none"],
)
def test_file_roots_from_the_environment(tmp_path: Path, raw: str,
                                         expected: tuple[str, ...]) -> None:
    settings = Settings.load({"data_dir": tmp_path}, environ={"SHIPYARD_FILE_ROOTS": raw})
    assert settings.file_roots == tuple(Path(p) for p in expected)
    assert settings.sources["file_roots"] is Source.ENV


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (["/srv/a", "~/data"], ("/srv/a", str(Path.home() / "data"))),
        ("/srv/a:/srv/b" if os.pathsep == ":" else "/srv/a;/srv/b", ("/srv/a", "/srv/b")),
        ([], ()),
    ],
    ids=["list", "string", "empty-list"],
)
def test_file_roots_from_the_config_file(tmp_path: Path, document: Any,
                                         expected: tuple[str, ...]) -> None:
    _config(tmp_path, {"file_roots": document})
    settings = Settings.load({"data_dir": tmp_path}, environ={})
    assert settings.file_roots == tuple(Path(p) for p in expected)
    assert settings.sources["file_roots"] is Source.CONFIG_FILE


@pytest.mark.parametrize(
    "document",
    [42, {"a": "/srv"}, ["/srv/a", 3], ["/srv/a", None], ["relative/data"], "relative",
     [""], True],
    ids=["number", "object", "number-entry", "null-entry", "relative-entry",
         "relative-string", "empty-entry", "boolean"],
)
def test_bad_file_roots_name_the_setting(tmp_path: Path, document: Any) -> None:
    _config(tmp_path, {"file_roots": document})
    with pytest.raises(ValidationError, match="file_roots"):
        Settings.load({"data_dir": tmp_path}, environ={})


def test_file_roots_survive_the_trip_to_a_detached_supervisor(tmp_path: Path) -> None:
    # The plane hands a detached supervisor its settings as JSON (as_overrides).
    settings = Settings.load({"data_dir": tmp_path, "file_roots": ["/srv/a,b", "/srv/c"]},
                             environ={})
    assert settings.file_roots == (Path("/srv/a,b"), Path("/srv/c"))
    again = Settings.load(json.loads(json.dumps(settings.as_overrides())), environ={})
    assert again == settings
    assert settings.explain()["file_roots"]["value"] == "/srv/a,b,/srv/c"


def test_container_confinement_settings(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": tmp_path}, environ={
        "SHIPYARD_CONTAINER_EXTRA_CAPABILITIES": "sys_ptrace, CAP_NET_ADMIN",
        "SHIPYARD_CONTAINER_PIDS_LIMIT": "512"})
    assert settings.container_extra_capabilities == ("SYS_PTRACE", "NET_ADMIN")
    assert settings.container_pids_limit == 512
    again = Settings.load(json.loads(json.dumps(settings.as_overrides())), environ={})
    assert again == settings
    # What a background server gets: the value as explain() shows it.
    shown = settings.explain()["container_extra_capabilities"]["value"]
    assert Settings.load({"data_dir": tmp_path}, environ={
        "SHIPYARD_CONTAINER_EXTRA_CAPABILITIES": shown}).container_extra_capabilities == (
        "SYS_PTRACE", "NET_ADMIN")
    assert Settings.load({"data_dir": tmp_path}, environ={}).container_extra_capabilities == ()


@pytest.mark.parametrize("raw", ["ALL", "SYS-PTRACE", "a b", 7],
                         ids=["all", "dash", "space", "number"])
def test_bad_capabilities_name_the_setting(tmp_path: Path, raw: Any) -> None:
    _config(tmp_path, {"container_extra_capabilities": raw})
    with pytest.raises(ValidationError, match="container_extra_capabilities"):
        Settings.load({"data_dir": tmp_path}, environ={})


def test_pids_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="container_pids_limit"):
        Settings.load({"data_dir": tmp_path}, environ={"SHIPYARD_CONTAINER_PIDS_LIMIT": "0"})


def test_refuse_missing_gpu_is_off_unless_asked(tmp_path: Path) -> None:
    assert Settings.load({"data_dir": tmp_path}, environ={}).refuse_missing_gpu is False
    settings = Settings.load({"data_dir": tmp_path},
                             environ={"SHIPYARD_REFUSE_MISSING_GPU": "true"})
    assert settings.refuse_missing_gpu is True
    assert settings.sources["refuse_missing_gpu"] is Source.ENV
    # What a detached supervisor gets.
    assert Settings.load(json.loads(json.dumps(settings.as_overrides())), environ={}) == settings
    with pytest.raises(ValidationError, match="refuse_missing_gpu"):
        Settings.load({"data_dir": tmp_path}, environ={"SHIPYARD_REFUSE_MISSING_GPU": "maybe"})
