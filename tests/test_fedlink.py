"""fedlink's settings: broker addresses, passwords kept off the command line, the
run file's link settings."""

import pytest

from fedcore.errors import ConfigError
from fedcore.experiment import load_run_config
from fedlink.settings import PASSWORD_ENV, LinkSettings, parse_broker, with_password


def test_a_password_comes_from_a_file_or_the_environment(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored second line\n")
    address = parse_broker("mqtt://client-003@broker.lab:1884")
    assert with_password(address, str(secret), environ={}).password == "s3cret"
    assert with_password(address, "", environ={PASSWORD_ENV: "env-pw"}).password == "env-pw"
    assert with_password(address, "", environ={}).password is None
    # The URL's own password wins over the environment; a file beside it is a mistake.
    inline = parse_broker("mqtt://client-003:url-pw@broker.lab")
    assert with_password(inline, "", environ={PASSWORD_ENV: "env-pw"}).password == "url-pw"
    with pytest.raises(ConfigError, match="already carries a password"):
        with_password(inline, str(secret), environ={})


@pytest.mark.parametrize("content, message", [
    (b"", "first line is empty"),
    (b"\xff\xfe", "not UTF-8"),
    (b"x" * 5000, "longer than 4096 bytes"),
])
def test_bad_password_files_are_named(tmp_path, content, message):
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        with_password(parse_broker("mqtt://u@h"), str(path), environ={})
    with pytest.raises(ConfigError, match="No such file"):
        with_password(parse_broker("mqtt://u@h"), str(tmp_path / "missing"), environ={})


def test_a_password_needs_a_user_and_never_shows_in_a_repr():
    with pytest.raises(ConfigError, match="needs a user name"):
        with_password(parse_broker("mqtt://h"), "", environ={PASSWORD_ENV: "pw"})
    address = parse_broker("mqtts://u:hunter2@h")
    assert "hunter2" not in repr(address) and "***" in repr(address)
    with pytest.raises(ConfigError, match="port must lie in"):
        parse_broker("mqtt://h:" + "9" * 400)


def test_link_settings_come_from_the_coordinator_table():
    run = load_run_config({"name": "lab", "coordinator": {"keepalive": 7, "wait_s": 3}})
    assert LinkSettings.from_run(run) == LinkSettings("lab", 7)
    run = load_run_config({"coordinator": {"run_id": "bad/id"}})
    with pytest.raises(ConfigError, match="coordinator.run_id"):
        LinkSettings.from_run(run)
    with pytest.raises(ConfigError, match="coordinator.keepalive must be an integer"):
        LinkSettings.from_run(load_run_config({"coordinator": {"keepalive": 10**400}}))


def test_the_broker_can_come_from_the_environment_and_a_password_never_needs_the_command_line(monkeypatch):
    """Issue 23: the board's unit put user:password on the command line (/proc/PID/cmdline)."""
    import argparse

    from fedlink.cli import add_link_arguments
    from fedlink.settings import BROKER_ENV, split_password

    assert split_password("mqtts://pynq-07:s3cret@broker.lab:8883") == ("mqtts://pynq-07@broker.lab:8883", "s3cret")
    assert split_password("mqtt://broker") == ("mqtt://broker", "")
    with pytest.raises(ConfigError, match="--broker must look like"):
        split_password("http://x")
    monkeypatch.setenv(BROKER_ENV, "mqtt://pynq-07@broker:1883")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    parser = argparse.ArgumentParser()
    add_link_arguments(parser)
    args = parser.parse_args(["--config", "run.toml"])
    address = with_password(parse_broker(args.broker), args.password_file)
    assert (address.host, address.port, address.username, address.password) == ("broker", 1883, "pynq-07", "s3cret")
    monkeypatch.delenv(BROKER_ENV)
    parser = argparse.ArgumentParser()
    add_link_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", "run.toml"])  # neither --broker nor FL_BROKER
