"""Coordinator pieces without a broker: protocol names and payloads, settings,
the run store (atomic checkpoint, log trimming on resume)."""

import json
import os
import re

import pytest

from coordinator.server import CoordinatorSettings
from coordinator.store import RunStore
from fedcore.errors import ConfigError
from fedcore.experiment import load_run_config
from fedlink.protocol import (
    ACK,
    MAX_JSON_BYTES,
    PRESENCE,
    Topics,
    blob_id,
    check_name,
    from_json,
    to_json,
)
from fedlink.settings import parse_broker


def test_parse_broker_urls():
    assert parse_broker("mqtt://127.0.0.1:1884") == parse_broker("mqtt://127.0.0.1:1884/")
    address = parse_broker("mqtts://client-003:s3cret@broker.lab")
    assert (address.host, address.port, address.tls, address.username, address.password) == (
        "broker.lab", 8883, True, "client-003", "s3cret")
    assert parse_broker("mqtt://h").port == 1883
    for bad in ["", "tcp://h:1", "mqtt://h:0", "mqtt://h:70000", "mqtt:/h", "mqtt://h:1/x"]:
        with pytest.raises(ConfigError, match="--broker"):
            parse_broker(bad)


def test_topic_names_and_parsing():
    topics = Topics("run-1")
    assert topics.update("client-001", "ab12") == "fl/run-1/update/client-001/ab12"
    assert topics.parse("fl/run-1/update/client-001/ab12") == ("update", "client-001", "ab12")
    assert topics.parse("fl/run-1/presence/client-001") == ("presence", "client-001", "")
    assert topics.parse("fl/run-2/presence/client-001") == ("", "", "")
    assert topics.parse("fl/run-1/update/client-001") == ("", "", "")
    for bad in ["", "a/b", "a+", "#", "x" * 65, "-lead"]:
        with pytest.raises(ConfigError):
            check_name(bad, "id")


def test_json_payloads_are_checked_against_their_schema():
    presence = {"v": 1, "status": "online", "client": "c-1", "last_update": {"plan_id": "ab", "train_s": 2}}
    assert from_json(to_json(presence), "x", PRESENCE)["last_update"]["train_s"] == 2.0
    for raw, words in [(b"\xff", "UTF-8"), (b"[1]", "expected an object"), (b"{", "byte"),
                       (b" " * (MAX_JSON_BYTES + 1), "exceeds the limit"),
                       (b"[" * 20000 + b"]" * 20000, "nested deeper"),
                       (b'{"status":"online","time":' + b"9" * 400 + b"}", "digits"),
                       (b'{"status":"away"}', "$.status"),
                       (to_json({"status": "online", "last_update": {"plan_id": "a", "train_s": -1}}),
                        "$.last_update.train_s")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            from_json(raw, "presence", PRESENCE)
    assert from_json(b'{"status":"accepted","extra":1}', "ack", ACK) == {"status": "accepted"}  # newer fields


def test_coordinator_settings_defaults_and_errors():
    run = load_run_config({"name": "demo", "data": {"num_clients": 4}, "coordinator": {"wait_s": 3}},
                          ["coordinator"])
    settings = CoordinatorSettings.from_run(run)
    assert (settings.run_id, settings.expected_clients, settings.wait_s) == ("demo", 4, 3.0)
    for table, words in [({"bogus": 1}, "unknown key"), ({"wait_s": -1}, "wait_s"), ({"evaluate": 1}, "evaluate"),
                         ({"run_id": "a/b"}, "run_id"), ({"keepalive": 0.5}, "keepalive")]:
        bad = load_run_config({"coordinator": table}, ["coordinator"])
        with pytest.raises(ConfigError, match=words):
            CoordinatorSettings.from_run(bad)


def test_json_run_config_for_boards_without_tomli(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"name": "j", "federation": {"rounds": 3}, "device": {}}))
    assert load_run_config(str(path)).federation.rounds == 3
    path.write_text("{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_run_config(str(path))


def test_checkpoints_are_written_whole(tmp_path):
    store = RunStore(str(tmp_path))
    store.save_checkpoint(b"one")
    store.save_checkpoint(b"two")  # fedcore.atomic (tests/test_atomic.py)
    assert store.load_checkpoint() == b"two"
    assert os.listdir(tmp_path) == ["checkpoint.fedc"]  # no temporary file left


def test_resume_trims_rounds_the_checkpoint_does_not_hold(tmp_path):
    store = RunStore(str(tmp_path))
    for number in (1, 2, 3):
        store.append_round({"round": number})
    with open(store.rounds_path, "a") as handle:
        handle.write('{"round": 4, "acc')  # torn by a crash while appending
    assert [r["round"] for r in store.trim_rounds(2)] == [1, 2]
    assert [r["round"] for r in store.read_rounds()] == [1, 2]


def test_a_torn_line_inside_the_log_is_an_error(tmp_path):
    store = RunStore(str(tmp_path))
    with open(store.rounds_path, "w") as handle:
        handle.write('{"round": 1}\nnot json\n{"round": 2}\n')
    with pytest.raises(RuntimeError, match="rounds.jsonl:2"):
        store.read_rounds()


def test_blob_ids_are_short_content_hashes():
    assert blob_id(b"a") == blob_id(b"a") != blob_id(b"b")
    assert len(blob_id(b"a")) == 16


def test_a_checkpoint_of_another_config_is_refused(tmp_path, capsys):
    from coordinator.cli import main
    from coordinator.config import initial_state
    from fedcore.rounds import RoundServer
    from tests.fl_testkit import settings, write_config, write_dataset

    # Prepare: a checkpoint written for one learning rate, then the config asks for another.
    table = settings(write_dataset(str(tmp_path / "data"), train=150, test=20), run_id="cp")
    run = load_run_config(write_config(str(tmp_path), table))
    RunStore(str(tmp_path / "run")).save_checkpoint(
        RoundServer(initial_state(run, CoordinatorSettings.from_run(run)), run.federation).checkpoint())
    table["federation"]["train"]["lr"] = 0.5
    config = write_config(str(tmp_path), table)
    # Execute
    status = main(["--broker", "mqtt://127.0.0.1:1", "--config", config, "--run-dir", str(tmp_path / "run")])
    # Assert
    assert status == 2
    assert "written for another configuration" in capsys.readouterr().err
