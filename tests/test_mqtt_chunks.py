"""Models and updates through a broker that caps messages (issue 27): a real Mosquitto with
`message_size_limit 131072`, as AWS IoT Core and many managed brokers have.

- a ResNet-8 FedAvg round (4.9 MB each way per client) crosses it as chunks, with three
  devices, and gives the simulation's model bit for bit;
- with chunking off, the coordinator stops with a message that names the broker's cap and
  the setting to change;
- the broker stops in the middle of an update: the device queues nothing while it is away,
  and the round completes after it returns without the chunks that had arrived crossing again;
- a link sending to a closed port holds nothing in paho's queue however often it is asked.
"""

import collections
import hashlib
import json
import time

import numpy as np
import pytest

from fedcore.container import Message, decode_message, encode_message
from fedlink.chunks import chunk_count, chunk_message, chunk_topic
from fedlink.link import QUEUE_MESSAGES, WINDOW, MqttLink
from fedlink.protocol import Topics, blob_id
from fedlink.settings import parse_broker
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
from tests.mosquitto_broker import Mosquitto, ThrottledProxy, free_port

CAP = 131072
CAPPED = [f"message_size_limit {CAP}"]


def _queued_bytes(link: MqttLink) -> int:
    """What paho holds for sending (its out-queue), in payload bytes."""
    client = link._client
    with client._out_message_mutex:
        return sum(len(m.payload) for m in client._out_messages.values())


def test_a_resnet8_round_crosses_a_128k_broker_as_chunks_and_equals_the_simulation(tmp_path):
    torch = pytest.importorskip("torch")
    # Prepare
    from training.fl.config import load_config
    from training.fl.mqtt import export_initial
    from training.fl.simulation import build, load_data, run_rounds

    data = write_dataset(str(tmp_path / "data"), train=90, test=30)
    table = settings(data, run_id="resnet8", broadcast="weights", rounds=1, deadline_s=120.0)
    table["model"] = {"name": "resnet8", "widths": [64, 128, 256], "norm": "gn", "norm_groups": 2}
    table["compression"] = {"uplink": {}, "downlink": {}}  # 4.9 MB of float32 each way
    table["federation"]["update_kind"] = "weights"
    table["federation"]["train"] = {"epochs": 1, "batch_size": 16, "lr": 0.01}
    table["simulation"] = {"method": "standard", "threads": 1}
    config = write_config(str(tmp_path), table)
    run_config, sim = load_config(json.loads(open(config).read()))
    torch.set_num_threads(sim.threads)
    setup = build(run_config, sim, load_data(run_config, sim))
    expected, _ = run_rounds(setup, progress=False)
    initial = str(tmp_path / "initial.fedc")
    export_initial(run_config, initial)
    run_dir = str(tmp_path / "run")
    # Execute
    with Mosquitto(str(tmp_path), extra=CAPPED) as broker:
        run = ThreadedRun(broker.url, config, run_dir, trainer="training.fl.mqtt:trainer",
                          initial_model=initial, evaluator="training.fl.mqtt:evaluator")
        run.start_clients()
        run.start_coordinator()
        report = run.join(timeout=240)
    # Assert: the simulation's bytes, accuracy and model, bit for bit.
    (record,) = read_jsonl(str(tmp_path / "run" / "rounds.jsonl"))
    assert record["bytes_up"] == expected[0]["bytes_up"] > 3 * 4.8e6
    assert record["bytes_down"] == expected[0]["bytes_down"]
    assert record["accuracy"] == expected[0]["accuracy"]
    final = checkpoint_state(run_dir)
    for name, value in setup.server.global_state.items():
        np.testing.assert_array_equal(final[name], value)
    assert report["rounds"] == 1 and report["rejected"] == 0
    # What crossed the wire: every byte in messages of at most 128 KiB, 64 header bytes a chunk.
    chunks = sum(-(-c["bytes_up"] // (CAP - 64)) for c in record["clients"].values())
    assert record["wire_up"] == record["bytes_up"] + 64 * chunks
    for client in record["clients"].values():
        assert client["wire_up"] == client["bytes_up"] + 64 * -(-client["bytes_up"] // (CAP - 64))
        assert client["wire_down"] >= client["bytes_down"]


def test_without_chunks_the_coordinator_names_the_broker_cap_and_the_setting(tmp_path):
    # Prepare: a 200 kB model, one message, a broker that takes 128 KiB.
    data = write_dataset(str(tmp_path / "data"))
    table = settings(data, run_id="nochunks", broadcast="weights", rounds=1,
                     coordinator={"max_payload": 0})
    table["model"] = {"name": "mlp", "hidden": [64]}
    table["compression"] = {"uplink": {}, "downlink": {}}
    config = write_config(str(tmp_path), table)
    # Execute
    with Mosquitto(str(tmp_path), extra=CAPPED) as broker:
        run = ThreadedRun(broker.url, config, str(tmp_path / "run"))
        run.start_clients()
        run.start_coordinator()
        wait_for(lambda: run.errors, 40, "the coordinator's error")
        with pytest.raises(Exception) as raised:
            run.join(timeout=1)
    # Assert
    text = str(raised.value)
    assert "did not deliver the round's model" in text and "message_size_limit" in text, text
    assert "[coordinator] max_payload" in text and "131072" in text, text


def test_a_broker_outage_mid_update_queues_nothing_and_resumes_with_the_missing_chunks(tmp_path):
    # Prepare: a 400 kB update in 16 KiB chunks through a 100 kB/s path: 4 s on the wire.
    data = write_dataset(str(tmp_path / "data"))
    table = settings(data, run_id="outage", clients=1, broadcast="weights", rounds=1, deadline_s=60.0,
                     coordinator={"max_payload": 16384})
    table["model"] = {"name": "mlp", "hidden": [128]}
    table["compression"] = {"uplink": {}, "downlink": {}}
    config = write_config(str(tmp_path), table)
    expected = reference(config)
    run_dir = str(tmp_path / "run")
    port = free_port()
    broker = Mosquitto(str(tmp_path), port=port, extra=CAPPED).start()
    proxy = ThrottledProxy(port, rate=100_000)
    try:
        run = ThreadedRun(broker.url, config, run_dir)
        run.start_coordinator()
        run.start_clients(broker_url=proxy.url)
        (device,) = run.clients
        parts = run.coordinator_link._chunks
        def updates():
            return {t: p for t, p in list(parts.partials.items()) if "/update/" in t}
        wait_for(lambda: any(len(p.pieces) >= 6 for p in updates().values()), 60, "part of the update")
        (update_topic,) = list(updates())
        out = device.link.outgoing(update_topic)
        # Execute: the broker goes away in the middle of the update, for 4 s.
        broker.stop()
        held = set(parts.partials[update_topic].pieces)
        queued = []
        ends = time.monotonic() + 4.0
        while time.monotonic() < ends:
            queued.append(_queued_bytes(device.link))
            time.sleep(0.1)
        broker.start()
        report = run.join(timeout=60)
    finally:
        proxy.close()
        broker.stop()
    # Assert: the round completed with the device's update, the simulation's model.
    assert report["rounds"] == 1 and report["rejected"] == 0
    (record,) = read_jsonl(f"{run_dir}/rounds.jsonl")
    assert record["accepted"] == ["client-000"]
    final = checkpoint_state(run_dir)
    for name, value in expected["state"].items():
        np.testing.assert_array_equal(final[name], value)
    # Nothing piled up while the broker was away: the window of chunks in flight and a presence.
    assert max(queued) <= WINDOW * 16384 + 4096, max(queued)
    # The chunks the coordinator held before the outage did not cross again: only the few that
    # were in flight (paho re-sends those) can arrive twice.
    assert len(held) >= 6 and out.count == -(-record["bytes_up"] // (16384 - 64))
    assert parts.duplicates <= WINDOW, parts.duplicates
    assert out.sent <= out.count + 2 * WINDOW, (out.sent, out.count)
    print(f"outage: {out.count} chunks, {len(held)} held before it, {out.sent} sent in all, "
          f"{parts.duplicates} arrived twice, paho queue at most {max(queued)} bytes")


def test_a_link_to_a_closed_port_queues_nothing_however_often_asked(tmp_path):
    """Before: five sends of a 400 kB update to a closed port left 2 MB in paho's queue."""
    link = MqttLink(parse_broker(f"mqtt://127.0.0.1:{free_port()}"), "lonely", [], reconnect=(0.1, 0.2))
    link.start()
    try:
        for _ in range(5):
            link.send_blob("fl/x/update/lonely/p1", bytes(400_000))
            assert not link.probe("fl/x/update/lonely/p1")  # nothing can be sent: says so
            link.publish("fl/x/presence/lonely", b"{}")
        time.sleep(0.5)
        assert _queued_bytes(link) <= 5 * 2  # the five small presence messages
        assert len(link._client._out_messages) <= QUEUE_MESSAGES
        for _ in range(2 * QUEUE_MESSAGES):
            link.publish("fl/x/presence/lonely", b"{}")
        assert len(link._client._out_messages) == QUEUE_MESSAGES  # then publish fails, and logs why
        assert not link.publish("fl/x/presence/lonely", b"{}")
    finally:
        link.stop()


def test_the_coordinator_names_the_chunks_it_lacks_and_repeats_its_verdict(tmp_path):
    """The resume messages on a real broker, spoken by hand: an update whose chunks 1 and 3 were
    lost (as a broker that restarted would lose them); its sender asks where it stands (its last
    chunk again) and gets a `partial` ack naming exactly those; once they come, the update is
    accepted; asking again gets the verdict again."""
    # Prepare: the run's one client is this test.
    data = write_dataset(str(tmp_path / "data"))
    table = settings(data, run_id="resume", clients=1, broadcast="weights", rounds=2, deadline_s=5.0,
                     min_updates=1, coordinator={"max_payload": 4096, "stall_rounds": 0})
    table["compression"] = {"uplink": {}, "downlink": {}}
    config = write_config(str(tmp_path), table)
    topics = Topics("resume")
    with Mosquitto(str(tmp_path), extra=CAPPED) as broker:
        watcher = Watcher(broker.url, topics.base + "/#")
        try:
            ghost(watcher, topics, "client-000")
            run = ThreadedRun(broker.url, config, str(tmp_path / "run"))
            run.start_coordinator()
            wait_for(lambda: any(b'"round":1' in p for p in watcher.payloads(topics.round)), 20, "round 1")
            plan = json.loads([p for p in watcher.payloads(topics.round) if b'"round":1' in p][-1])["plan_id"]
            model = decode_message(watcher.blobs(topics.model)[-1]).tensors
            update = encode_message(Message({n: np.zeros_like(v) for n, v in model.items()}, 1, "client-000",
                                            10, "delta"))[0]
            digest = hashlib.sha256(update).digest()
            size, count = chunk_count(len(update), 4096)
            topic = topics.update("client-000", plan)

            def send(index):
                watcher.publish(chunk_topic(topic, index), chunk_message(update, digest, size, index))

            def acks(status):
                return [a for a in map(json.loads, watcher.payloads(topics.ack("client-000"))) if a["status"] == status]
            # Execute
            for index in range(count):
                if index not in (1, 3):
                    send(index)
            send(count - 1)  # where does my update stand?
            wait_for(lambda: acks("partial"), 5, "a partial ack")
            send(1)
            send(3)
            wait_for(lambda: acks("accepted"), 5, "the verdict")
            time.sleep(1.1)  # (the coordinator answers a topic at most once a second)
            send(count - 1)
            wait_for(lambda: len(acks("accepted")) == 2, 5, "the verdict again")
            report = run.join(timeout=30)
        finally:
            watcher.close()
    # Assert
    (partial,) = acks("partial")
    assert count > 8 and partial["missing"] == [[1, 1], [3, 3]] and partial["update_id"] == digest.hex()
    assert report["rounds"] == 2
    first = read_jsonl(str(tmp_path / "run" / "rounds.jsonl"))[0]
    assert first["accepted"] == ["client-000"]
    repeat = len(chunk_message(update, digest, size, count - 1))
    assert first["clients"]["client-000"]["wire_up"] == len(update) + 64 * count + repeat


def test_a_model_download_cut_in_the_middle_resumes_with_the_missing_chunks_only(tmp_path):
    """The downlink's resume: a device fetching a retained 400 kB model through a slow path
    loses its connection half-way; after reconnecting it subscribes to the chunks it lacks,
    one topic each, so no chunk it holds crosses the wire again."""
    blob = np.random.default_rng(0).standard_normal(100_000).astype(np.float32).tobytes()
    topic = "fl/resume/model"
    with Mosquitto(str(tmp_path)) as broker:
        proxy = ThrottledProxy(broker.port, rate=100_000)
        sender = MqttLink(parse_broker(broker.url), "coordinator", [], max_payload=16384).start()
        device = MqttLink(parse_broker(proxy.url), "client-000", [], reconnect=(0.1, 0.2)).start()
        try:
            assert sender.wait_connected(5) and device.wait_connected(5)
            sender.send_blob(topic, blob, retain=True)
            wait_for(lambda: sender.outgoing(topic).queue == collections.deque() and not sender._inflight, 10,
                     "the model retained on the broker")
            device.fetch(topic, blob_id(blob))
            got = []

            def pump():
                incoming = device.get(0.05)
                if incoming is not None:
                    got.append(incoming)
                return device._chunks.partials.get(topic) is not None and \
                    len(device._chunks.partials[topic].pieces) >= 8
            wait_for(pump, 20, "half of the model")
            proxy.cut()
            wait_for(lambda: not device.connected.is_set(), 5, "the cut")
            before = len(device._chunks.partials[topic].pieces)
            ends = time.monotonic() + 30
            while not got and time.monotonic() < ends:
                incoming = device.get(0.1)
                if incoming is not None:
                    got.append(incoming)
        finally:
            device.stop()
            sender.stop()
            proxy.close()
    (whole,) = got
    assert whole.topic == topic and whole.payload == blob
    count = -(-len(blob) // (16384 - 64))
    assert 8 <= before < count and device._chunks.duplicates == 0
    assert device.wire_received == len(blob) + 64 * count  # every chunk crossed once
