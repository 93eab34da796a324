"""Issue 23, floods: 30 s of garbage updates (on the open plan, from a selected client that never
trains and from a thousand ids that were never announced) and garbage presence, as fast as one
publisher goes, while a real run goes on over Mosquitto. Before, memory went from 52 to 373 MB and
stayed, and the files grew by 135 MB in 30 s (one rounds.jsonl line was 32 MB). Now the
coordinator's memory grows by less than 64 MB, its files by less than 10 MB a round, and the run
ends with the clean run's model."""

import json
import os
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt

from fedlink.protocol import Topics
from fedlink.settings import parse_broker
from tests.fl_testkit import (
    Watcher,
    checkpoint_state,
    ghost,
    kill_all,
    reference,
    settings,
    spawn_client,
    spawn_coordinator,
    wait_for,
    write_config,
    write_dataset,
)
from tests.mosquitto_broker import Mosquitto

FLOOD_S = 30.0
# Messages a second: the flood (FLOOD_RATE=0: as fast as one publisher goes, to try by hand)
RATE = int(os.environ.get("FLOOD_RATE", "10000"))
MEMORY_BOUND_MB = 64
DISK_BOUND_MB_A_ROUND = 10


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _flood(url: str, topics: Topics, plan_id: str, until: float, sent: list) -> None:
    address = parse_broker(url)
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_queued_messages_set(10000)
    client.connect(address.host, address.port, keepalive=10)
    client.loop_start()
    rng = np.random.default_rng(0)
    garbage = rng.bytes(1024)
    ids = ["intruder-%03d" % i for i in range(1000)]
    count, started = 0, time.monotonic()
    while time.monotonic() < until:
        sender = "client-003" if count % 3 == 0 else ids[count % len(ids)]
        if count % 5 == 4:  # a garbage presence, under a new id each time
            client.publish(topics.presence(ids[count % len(ids)]), b"{" * 100, qos=0)
        else:
            client.publish(topics.update(sender, plan_id), garbage, qos=0)
        count += 1
        if count % 100 == 0 and RATE:
            time.sleep(max(0.0, started + count / RATE - time.monotonic()))
        elif count % 500 == 0:
            time.sleep(0.001)  # let paho's thread write
    client.loop_stop()
    client.disconnect()
    sent.append(count)


def test_a_flood_costs_bounded_memory_and_disk(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    # The ghost client-003 is selected every round and never trains: every round lasts its deadline,
    # so the flood meets open rounds the whole time.
    rounds = 3
    config = write_config(str(tmp_path), settings(data, run_id="flood", broadcast="weights", rounds=rounds,
                                                  deadline_s=FLOOD_S / rounds + 2,
                                                  coordinator={"expected_clients": 4}))
    expected = reference(config)
    topics = Topics("flood")
    run_dir = str(tmp_path / "run")
    log_path = str(tmp_path / "coordinator.log")
    processes = []
    with Mosquitto(str(tmp_path)) as broker:
        watcher = Watcher(broker.url, topics.round)
        try:
            ghost(watcher, topics, "client-003")
            coordinator = spawn_coordinator(broker.url, config, run_dir, log_path)
            processes = [coordinator] + [spawn_client(broker.url, config, "client-%03d" % i,
                                                      str(tmp_path / f"client-{i}.log")) for i in range(3)]
            wait_for(lambda: any(b'"round":1' in p for p in watcher.payloads(topics.round)), 60, "round 1")
            plan = json.loads([p for p in watcher.payloads(topics.round) if b'"round":1' in p][-1])["plan_id"]
            time.sleep(0.5)
            before = _rss_mb(coordinator.pid)
            sent: list = []
            flooder = threading.Thread(target=_flood, args=(broker.url, topics, plan, time.monotonic() + FLOOD_S,
                                                            sent))
            flooder.start()
            peak = before
            while flooder.is_alive():
                peak = max(peak, _rss_mb(coordinator.pid))
                time.sleep(0.2)
            coordinator.wait(120)
        finally:
            watcher.close()
            kill_all(processes)
    files = [os.path.join(run_dir, name) for name in ("rounds.jsonl", "events.jsonl")] + [log_path]
    written_mb = sum(os.path.getsize(f) for f in files if os.path.exists(f)) / 2**20
    print(f"flood: {sent[0]} messages in {FLOOD_S:.0f} s; coordinator RSS {before:.0f} -> peak {peak:.0f} MB; "
          f"files {written_mb:.2f} MB for {rounds} rounds")
    assert coordinator.returncode == 0, open(log_path).read()[-3000:]
    assert sent[0] > 0.8 * FLOOD_S * (RATE or 10000)  # a flood, not a trickle
    assert peak - before < MEMORY_BOUND_MB
    assert written_mb < DISK_BOUND_MB_A_ROUND * rounds
    with open(os.path.join(run_dir, "rounds.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    final = checkpoint_state(run_dir)
    for name, value in expected["state"].items():
        np.testing.assert_array_equal(final[name], value)
    # What was held back is counted, and said once a round, not once a message
    assert sum(r["refused"]["suppressed"] for r in records) > 10000
    assert max(len(json.dumps(r)) for r in records) < 1 << 20
    assert all(len(r["accepted"]) == 3 for r in records)  # the flood kept no device from the run
