"""Settings are layered: defaults, then the TOML file, then ``ORCHESTRA_*`` variables,
then flags; a bad value is refused with its key, its value and where it came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestra.config import load_settings
from orchestra.domain.errors import InvalidInput


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ORCHESTRA_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRA_"):
            monkeypatch.delenv(name)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestra.toml"
    path.write_text(text)
    return path


def test_each_layer_wins_over_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(
        tmp_path,
        'host = "0.0.0.0"\nport = 4000\nlog_level = "DEBUG"\n[agents.planner]\ncommand = "x"\n',
    )
    monkeypatch.setenv("ORCHESTRA_PORT", "5000")
    monkeypatch.setenv("ORCHESTRA_LOG_LEVEL", "ERROR")
    settings = load_settings(data_dir=tmp_path, log_level="WARNING", host=None)
    assert settings.config_file == tmp_path / "orchestra.toml"  # <data dir>/orchestra.toml
    assert settings.host == "0.0.0.0"  # the file, over the default
    assert settings.port == 5000  # the environment, over the file
    assert settings.log_level == "WARNING"  # a flag, over the environment (None: not given)
    assert settings.lease_ttl_s == 30.0  # the default


def test_the_environment_names_the_config_file_and_spells_lists_and_booleans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = _config(tmp_path, 'max_streams = 7\ndata_dir = "/elsewhere"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CONFIG", str(elsewhere))
    monkeypatch.setenv("ORCHESTRA_ALLOWED_ROOTS", os.pathsep.join(["/srv/a", "", "/srv/b"]))
    monkeypatch.setenv("ORCHESTRA_ALLOWED_HOSTS", "a.example, b.example:8443 ,")
    monkeypatch.setenv("ORCHESTRA_WORKER", "off")
    monkeypatch.setenv("ORCHESTRA_NO_AUTH", "Yes")
    settings = load_settings()
    assert settings.max_streams == 7
    # The data dir says where the file is; the file cannot move it.
    assert settings.data_dir == tmp_path / "home" / ".orchestra"
    assert settings.allowed_roots == [Path("/srv/a"), Path("/srv/b")]
    assert settings.allowed_hosts == ["a.example", "b.example:8443"]
    assert (settings.worker, settings.no_auth) == (False, True)


@pytest.mark.parametrize(
    ("file", "env", "says"),
    [
        ("port = 70000\n", {}, "port = 70000 (from {file}): Input should be less than"),
        ("", {"ORCHESTRA_PORT": "http"}, "port = 'http' (from ORCHESTRA_PORT): Input should be"),
        ("", {"ORCHESTRA_WORKER": "maybe"}, "worker = 'maybe' (from ORCHESTRA_WORKER)"),
        ("lease_ttl_s = 0.5\n", {}, "lease_ttl_s = 0.5 (from {file}): Input should be greater"),
    ],
)
def test_a_bad_value_names_its_key_and_its_source(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file: str,
    env: dict[str, str],
    says: str,
) -> None:
    path = _config(tmp_path, file)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as refused:
        load_settings(data_dir=tmp_path)
    assert refused.value.message.startswith("invalid settings: ")
    assert says.format(file=path) in refused.value.message
    assert refused.value.details["fields"] == [says.split(" ", 1)[0]]


def test_a_bad_flag_is_blamed_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"port = 0 \(from the command line\)"):
        load_settings(data_dir=tmp_path, port=0)


def test_a_config_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = _config(tmp_path, "port = \n")
    with pytest.raises(InvalidInput, match="not valid TOML") as refused:
        load_settings(data_dir=tmp_path)
    assert refused.value.message.startswith(f"{path}: ")


# -- [[notify]] targets -------------------------------------------------------------

NOTIFY_OK = """
[[notify]]
name = "ops"
url = "https://hooks.example.com/orchestra"
secret = { from_env = "OPS_HOOK_SECRET" }

[[notify]]
name = "chat"
url = "https://hooks.slack.com/services/T/B/X"
format = "slack"
events = ["checkpoint_pending", "workflow_completed"]
timeout_s = 3
max_attempts = 2
"""


def test_notify_targets_are_read_with_their_defaults(tmp_path: Path) -> None:
    from orchestra.domain.events import NotificationKind
    from orchestra.notifications.targets import SecretFromEnv, resolve_targets

    _config(tmp_path, 'public_url = "https://orchestra.example.com/"\n' + NOTIFY_OK)
    settings = load_settings(data_dir=tmp_path)
    ops, chat = settings.notify
    assert ops.events == [NotificationKind.CHECKPOINT_PENDING, NotificationKind.WORKFLOW_FAILED]
    assert ops.format == "json" and ops.timeout_s == 10 and ops.max_attempts == 8
    assert ops.secret == SecretFromEnv(from_env="OPS_HOOK_SECRET")
    assert chat.secret is None and chat.max_attempts == 2
    assert settings.link_base == "https://orchestra.example.com"
    resolved = resolve_targets(settings.notify, {"OPS_HOOK_SECRET": "k"})
    assert resolved[0].secret == b"k" and resolved[1].secret is None


def test_the_default_link_is_this_server(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, port=4321)
    assert settings.link_base == "http://127.0.0.1:4321"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('name = "a"\nurl = "ftp://x"\nsecret = "k"', "url"),
        ('name = "a"\nurl = "https://x"', "needs a secret"),
        ('name = "a"\nurl = "https://x"\nsecret = "k"\nevents = ["deploy"]', "events"),
        ('name = "a"\nurl = "https://x"\nsecret = "k"\nevents = []', "at least one event"),
        ('name = "a"\nurl = "https://x"\nsecret = "k"\nformat = "xml"', "format"),
        ('name = "a"\nurl = "https://x"\nsecret = { env = "X" }', "secret"),
        ('name = "a b"\nurl = "https://x"\nsecret = "k"', "name"),
        ('name = "a"\nurl = "https://x"\nsecret = "k"\nheaders = 1', "headers"),
    ],
)
def test_a_bad_notify_table_is_refused_naming_it_and_never_echoing_the_secret(
    tmp_path: Path, table: str, says: str
) -> None:
    _config(tmp_path, f"[[notify]]\n{table}\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(data_dir=tmp_path)
    message = caught.value.message
    assert "[[notify]] #1" in message and says in message, message
    assert "'k'" not in message and '"k"' not in message


def test_two_targets_with_one_name_are_refused(tmp_path: Path) -> None:
    one = '[[notify]]\nname = "a"\nurl = "https://x"\nsecret = "k"\n'
    _config(tmp_path, one + one)
    with pytest.raises(InvalidInput, match="two \\[\\[notify\\]\\] tables are named 'a'"):
        load_settings(data_dir=tmp_path)


def test_a_secret_from_a_missing_variable_stops_the_start_naming_it(tmp_path: Path) -> None:
    from orchestra.notifications.targets import resolve_targets

    _config(tmp_path, NOTIFY_OK)
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(InvalidInput, match="OPS_HOOK_SECRET, which is not set"):
        resolve_targets(settings.notify, {})
