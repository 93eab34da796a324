"""Issue 13's crash classes sent over a real Mosquitto while a run goes on: deeply nested
JSON and 400-digit integers in presence (retained, so a restarted coordinator would read
them again), on the round topic and on a device's ack topic, over-long varints on the
model topic, a 400-digit metric inside an update. Nothing ends a thread, every message is
logged with its reason, and the run ends with the clean run's model."""

import json
import logging
import os

import numpy as np

from fedlink.protocol import Topics, to_json
from tests.fl_testkit import (
    ThreadedRun,
    Watcher,
    checkpoint_state,
    ghost,
    read_jsonl,
    reference,
    settings,
    wait_for,
    write_config,
    write_dataset,
)
from tests.message_kit import frame_json
from tests.mosquitto_broker import Mosquitto

DEEP = b"[" * 30000 + b"]" * 30000  # under the 64 KiB cap, 30,000 levels deep
DEEP_OBJECT = b'{"a":' * 10000 + b"1" + b"}" * 10000
HUGE = "9" * 400


def _overlong_varint_model(shapes):
    """A delta broadcast whose sparse positions are 20-byte varints (they used to wrap)."""
    name, shape = next(iter(shapes.items()))
    size = int(np.prod(shape))
    positions = b"\xff" * 19 + b"\x01"
    header = {"meta": {"extra": {"base_round": 0}, "kind": "delta", "num_samples": 0, "round": 1,
                       "sender": "server"},
              "tensors": [{"codec": [{"format": "delta", "nnz": 1, "op": "sparse",
                                      "pos_bytes": len(positions)}],
                           "name": name, "nbytes": len(positions) + 4, "shape": list(shape)}]}
    assert size > 1
    return frame_json(header, positions + np.float32(1).tobytes())


def test_hostile_json_and_containers_change_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    data = write_dataset(str(tmp_path / "data"))
    # A ghost (client-003) is selected every round and never trains, so an update in its
    # name on the open plan is judged (rounds then last their 2.5 s deadline).
    config = write_config(str(tmp_path), settings(data, run_id="hostile", broadcast="weights", rounds=2,
                                                  deadline_s=2.5, coordinator={"expected_clients": 4}))
    expected = reference(config)
    topics = Topics("hostile")
    run_dir = str(tmp_path / "run")
    with Mosquitto(str(tmp_path)) as broker:
        watcher = Watcher(broker.url, topics.base + "/#")
        try:
            # Retained before the coordinator starts: it reads them at every (re)start.
            watcher.publish(topics.presence("client-005"), DEEP, retain=True)
            watcher.publish(topics.presence("client-006"), b'{"v":1,"status":"online","client":"client-006",'
                            b'"last_update":{"plan_id":"abc","train_s":' + HUGE.encode() + b'}}', retain=True)
            watcher.publish(topics.presence("client-007"), to_json({"status": "online", "client": "client-000"}),
                            retain=True)  # one id posing as another
            ghost(watcher, topics, "client-003")
            run = ThreadedRun(broker.url, config, run_dir)
            run.start_clients()
            run.start_coordinator()
            wait_for(lambda: any(b'"round":1' in p for p in watcher.payloads(topics.round)), 20, "round 1")
            shapes = {n: a.shape for n, a in expected["state"].items()}
            watcher.publish(topics.round, DEEP)
            watcher.publish(topics.round, b'{"v":1,"plan_id":"x","issued_at":' + HUGE.encode() + b"}")
            watcher.publish(topics.ack("client-000"), DEEP_OBJECT)
            watcher.publish_blob(topics.model, _overlong_varint_model(shapes))
            poisoned = frame_json(
                {"meta": {"extra": {"metrics": {"loss": int(HUGE)}}, "kind": "delta", "num_samples": 10,
                          "round": 1, "sender": "client-003"},
                 "tensors": [{"codec": [], "name": n, "nbytes": 4 * int(np.prod(shape)), "shape": list(shape)}
                             for n, shape in shapes.items()]},
                b"".join(np.zeros(shape, np.float32).tobytes() for shape in shapes.values()))
            plan = json.loads([p for p in watcher.payloads(topics.round) if b'"round":1' in p][-1])["plan_id"]
            watcher.publish_blob(topics.update("client-003", plan),  # on the open plan, as the ghost would
                                 poisoned)
            report = run.join(timeout=60)
        finally:
            watcher.close()
    # Every thread lived to the end: the coordinator finished, the devices trained both rounds.
    assert report["rounds"] == 2 and not report["stopped"]
    assert {c.client_id: c.rounds_trained for c in run.clients} == {
        "client-000": 2, "client-001": 2, "client-002": 2}
    final = checkpoint_state(run_dir)
    for name, value in expected["state"].items():
        np.testing.assert_array_equal(final[name], value)
    bad = [e for e in read_jsonl(os.path.join(run_dir, "events.jsonl")) if e["event"] == "bad_message"]
    reasons = {e["topic"].rsplit("/", 1)[1]: e["reason"] for e in bad}
    assert "deeper than" in reasons["client-005"] or "depth" in reasons["client-005"], reasons
    assert "digits" in reasons["client-006"], reasons
    assert "the payload says client 'client-000'" in reasons["client-007"], reasons
    device_logs = " ".join(r.getMessage() for r in caplog.records if "ignored a message" in r.getMessage())
    assert "fl/hostile/round" in device_logs and "fl/hostile/ack/client-000" in device_logs
    # A model no announcement names is not even read: devices fetch models by the announced id
    # (the decoder's refusal of its overlong varints is tests/test_container_fuzz.py's).
    assert "fl/hostile/model" not in device_logs
    undecodable = [e for e in read_jsonl(os.path.join(run_dir, "events.jsonl"))
                   if e["event"] == "update" and e["status"] == "rejected" and "digits" in e["reason"]]
    assert undecodable and undecodable[0]["client"] == "client-003", [e for e in read_jsonl(os.path.join(run_dir, "events.jsonl")) if e["event"] == "update"]
