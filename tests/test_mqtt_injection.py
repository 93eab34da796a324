"""Updates published from outside the run (paho, as mosquitto_pub would):
each is rejected with its reason logged, and the run ends with the same model
as a run without them."""

import json
import os

import numpy as np

from fedcore.container import Message, decode_message, encode_message
from fedlink.protocol import Topics
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
from tests.mosquitto_broker import Mosquitto

GHOST = "client-003"  # selected every round, never trains: rounds last their deadline


def _announcements(watcher, topics):
    return [json.loads(p) for p in watcher.payloads(topics.round) if p]


def _zero_update(shapes, round_number, sender):
    tensors = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    return encode_message(Message(tensors, round_number, sender, 10, "delta"))[0]


def test_injected_updates_are_rejected_and_change_nothing(tmp_path):
    # Prepare
    data = write_dataset(str(tmp_path / "data"))
    table = settings(data, run_id="inject", broadcast="delta", rounds=2, deadline_s=2.5,
                     coordinator={"expected_clients": 4, "max_update_bytes": 200_000})
    config = write_config(str(tmp_path), table)
    expected = reference(config)
    topics = Topics("inject")
    run_dir = str(tmp_path / "run")
    with Mosquitto(str(tmp_path)) as broker:
        watcher = Watcher(broker.url, topics.base + "/#")
        try:
            ghost(watcher, topics, GHOST)
            run = ThreadedRun(broker.url, config, run_dir)
            run.start_clients()
            run.start_coordinator()
            # Execute: round 1 gets every kind of bad update, round 2 one from the past.
            wait_for(lambda: any(a.get("plan", {}).get("round") == 1 for a in _announcements(watcher, topics)),
                     20, "round 1")
            first = _announcements(watcher, topics)[-1]
            model = decode_message(watcher.blobs(topics.model)[-1])
            shapes = {name: value.shape for name, value in model.tensors.items()}
            plan = first["plan_id"]
            good = _zero_update(shapes, 1, GHOST)
            nan = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
            nan["fc1.bias"][0] = np.nan
            injections = {
                "garbage": os.urandom(300),
                "truncated": good[:-9],
                "shapes": encode_message(Message({n: np.zeros((3, 3), np.float32) for n in shapes}, 1, GHOST, 10,
                                                 "delta"))[0],
                "nan": encode_message(Message(nan, 1, GHOST, 10, "delta"), allow_nonfinite=True)[0],
                "oversized": b"FEDC" + bytes(200_001),
                "impostor": _zero_update(shapes, 1, "client-000"),
            }
            for payload in injections.values():
                watcher.publish_blob(topics.update(GHOST, plan), payload)
            watcher.publish_blob(topics.update("client-099", plan), _zero_update(shapes, 1, "client-099"))
            wait_for(lambda: any(a.get("plan", {}).get("round") == 2 for a in _announcements(watcher, topics)),
                     20, "round 2")
            second = _announcements(watcher, topics)[-1]["plan_id"]
            watcher.publish_blob(topics.update(GHOST, second), good)          # an update for round 1 in round 2
            watcher.publish_blob(topics.update(GHOST, plan), good)            # on the plan of a closed round
            watcher.publish_blob(topics.update(GHOST, "feedc0ffee00"), good)  # on a plan never announced
            report = run.join(timeout=40)
        finally:
            watcher.close()
    # Assert
    events = [e for e in read_jsonl(os.path.join(run_dir, "events.jsonl")) if e["event"] == "update"]
    reasons = [(e["client"], e["status"], e["reason"]) for e in events if e["status"] != "accepted"]
    def has(client, status, words):
        return any(c == client and s == status and words in r for c, s, r in reasons)
    assert has(GHOST, "rejected", "undecodable"), reasons                       # garbage, truncated
    assert sum(1 for c, s, r in reasons if c == GHOST and "undecodable" in r) >= 3  # + NaN
    assert has(GHOST, "rejected", "shape [3, 3]"), reasons
    assert has(GHOST, "rejected", "max_update_bytes"), reasons
    assert has(GHOST, "rejected", "message says sender 'client-000'"), reasons
    assert has("client-099", "rejected", "was not selected"), reasons
    assert has(GHOST, "late", "round 1 is closed"), reasons
    assert has(GHOST, "late", f"round 1 (plan '{plan}') is closed"), reasons
    assert has(GHOST, "rejected", "plan 'feedc0ffee00' was never announced in this run"), reasons
    rounds = read_jsonl(os.path.join(run_dir, "rounds.jsonl"))
    assert [len(r["rejected"]) for r in rounds] == [7, 1]
    assert all(r["accepted"] == ["client-000", "client-001", "client-002"] for r in rounds)
    final = checkpoint_state(run_dir)
    for name, value in expected["state"].items():
        np.testing.assert_array_equal(final[name], value)
    assert report["rejected"] == 8 and report["late"] == 2
