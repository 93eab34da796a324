"""A device that joins during a delta-broadcast run cannot apply the retained
delta: it reads the retained full model, then trains when selected."""

import logging
import os

import numpy as np

from fedcore.container import decode_message
from fedlink.protocol import Topics
from tests.fl_testkit import (
    ThreadedRun,
    Watcher,
    ghost,
    read_jsonl,
    settings,
    wait_for,
    write_config,
    write_dataset,
)
from tests.mosquitto_broker import Mosquitto


def test_late_joiner_reads_the_full_model_and_trains(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="device.fl.client")
    # Prepare: rounds last their deadline (a ghost is selected and silent); client-002 starts in round 2.
    data = write_dataset(str(tmp_path / "data"))
    table = settings(data, run_id="late", broadcast="delta", rounds=3, deadline_s=2.0, min_updates=2,
                     coordinator={"expected_clients": 3})
    table["federation"]["min_clients"] = 3
    config = write_config(str(tmp_path), table)
    topics = Topics("late")
    run_dir = str(tmp_path / "run")
    with Mosquitto(str(tmp_path)) as broker:
        watcher = Watcher(broker.url, topics.base + "/#")
        try:
            ghost(watcher, topics, "client-003")
            run = ThreadedRun(broker.url, config, run_dir)
            run.start_clients(["client-000", "client-001"])
            run.start_coordinator()
            opened = lambda n: any(e.get("event") == "open" and e["round"] == n  # noqa: E731
                                   for e in read_jsonl(os.path.join(run_dir, "events.jsonl")))
            wait_for(lambda: opened(2), 20, "round 2")
            # The retained broadcast must be round 2's delta, or the late client would
            # simply follow round 1's weights and never be out of sync.
            round2_delta = lambda: any(decode_message(p).kind == "delta"  # noqa: E731
                                       for p in watcher.blobs(topics.model) if p)
            wait_for(round2_delta, 20, "the round-2 delta broadcast")
            # Execute
            run.start_clients(["client-002"])
            run.join(timeout=30)
            full_sizes = {len(p) for p in watcher.blobs(topics.full_model) if p}
        finally:
            watcher.close()
    # Assert
    rounds = read_jsonl(os.path.join(run_dir, "rounds.jsonl"))
    assert "client-002" not in rounds[1]["selected"]
    assert any("client-002" in m and "reading the retained full model" in m for m in caplog.messages)
    assert rounds[2]["accepted"] == ["client-000", "client-001", "client-002"]
    # The full model it read is counted beside the engine's broadcast bytes, and only for it.
    read = rounds[2]["clients"]["client-002"]["bytes_full_model"]
    assert read in full_sizes and rounds[2]["bytes_full_model"] == read
    assert rounds[2]["clients"]["client-000"]["bytes_full_model"] == 0
    late, early = run.clients[2], run.clients[0]
    assert late.engine.model_round == early.engine.model_round == 3
    for name, value in early.engine.model.items():
        np.testing.assert_array_equal(late.engine.model[name], value)


def test_a_stale_done_announcement_does_not_end_a_waiting_client(tmp_path):
    # Prepare: an earlier run of the same id ended and left its retained "done".
    data = write_dataset(str(tmp_path / "data"), train=150, test=10)
    config = write_config(str(tmp_path), settings(data, run_id="stale"))
    topics = Topics("stale")
    with Mosquitto(str(tmp_path)) as broker:
        watcher = Watcher(broker.url, topics.base + "/#")
        try:
            watcher.publish(topics.round, b'{"v": 1, "done": true, "completed_rounds": 2}', retain=True)
            run = ThreadedRun(broker.url, config, str(tmp_path / "run"))
            # Execute
            run.start_clients(["client-000"])
            wait_for(lambda: bool(watcher.payloads(topics.presence("client-000"))), 10, "the client")
            client = run.clients[0]
            wait_for(lambda: client.announcement is not None, 10, "the retained announcement")
            # Assert: it saw "done" but keeps waiting for a round of the next run
            assert client.announcement.done
            assert run.threads[0].is_alive()
        finally:
            for client in run.clients:
                client.stop()
                client.link.stop()
            watcher.close()
