"""The shipped Mosquitto config and ACL (brokers/): with passwords made by
brokers/make_passwords.sh, a device publishes on its own topics only."""

import os
import shutil
import subprocess
import time

import pytest

from fedlink.protocol import Topics
from tests.fl_testkit import ROOT, Watcher
from tests.mosquitto_broker import Mosquitto, free_port, require_mosquitto


def _shipped_config(tmp_path, port):
    """brokers/mosquitto.conf with the test's port, password file and state folder."""
    lines = []
    with open(os.path.join(ROOT, "brokers", "mosquitto.conf")) as handle:
        for line in handle.read().splitlines():
            if line.startswith("listener 1883"):
                line = f"listener {port} 127.0.0.1"
            elif line.startswith("password_file"):
                line = f"password_file {tmp_path / 'passwd'}"
            elif line.startswith("persistence_location"):
                line = f"persistence_location {tmp_path}/"
            lines.append(line)
    if os.geteuid() == 0:
        # As root mosquitto drops to user "mosquitto", who cannot read pytest's private tmp_path.
        lines.append("user root")
    return lines


def test_a_device_cannot_publish_on_another_devices_topics(tmp_path):
    # Prepare
    require_mosquitto()
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    made = subprocess.run([os.path.join(ROOT, "brokers", "make_passwords.sh"), str(tmp_path / "passwd"),
                           "coordinator", "client-001", "client-002"], capture_output=True, text=True,
                          check=True, timeout=30)
    passwords = dict(line.split() for line in made.stdout.splitlines())
    port = free_port()
    topics = Topics("acl")
    with Mosquitto(str(tmp_path), port=port, lines=_shipped_config(tmp_path, port), cwd=ROOT) as broker:
        coordinator = Watcher(broker.url, "fl/#", "coordinator", passwords["coordinator"])
        device = Watcher(broker.url, topics.base + "/#", "client-001", passwords["client-001"])
        try:
            # Execute: forbidden publications first, then allowed ones (in order from one publisher).
            device.publish(topics.update("client-002", "p1"), b"spoofed update")
            device.publish(topics.presence("client-002"), b"spoofed presence")
            device.publish(topics.round, b"spoofed announcement")
            device.publish(topics.ack("client-002"), b"spoofed ack")
            device.publish(topics.presence("client-001"), b"own presence")
            device.publish(topics.update("client-001", "p1"), b"own update")
            # What a device may read: the run's public topics and its own acks, not others' traffic.
            coordinator.publish(topics.update("client-002", "p1"), b"someone else's update")
            coordinator.publish(topics.ack("client-002"), b"someone else's ack")
            coordinator.publish(topics.ack("client-001"), b"own ack")
            coordinator.publish(topics.round, b"announcement")
            deadline = time.monotonic() + 5
            while (len(coordinator.messages) < 6 or len(device.messages) < 2) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            coordinator.close()
            device.close()
    # Assert
    received = [(t, p) for t, p in coordinator.messages if not p.startswith((b"someone", b"own ack", b"announ"))]
    assert received == [(topics.presence("client-001"), b"own presence"),
                        (topics.update("client-001", "p1"), b"own update")]
    assert sorted(device.messages) == [(topics.ack("client-001"), b"own ack"), (topics.round, b"announcement")]


def test_anonymous_clients_are_refused_by_the_shipped_config(tmp_path):
    import threading

    import paho.mqtt.client as mqtt
    require_mosquitto()
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    subprocess.run([os.path.join(ROOT, "brokers", "make_passwords.sh"), str(tmp_path / "passwd"), "coordinator"],
                   capture_output=True, check=True, timeout=30)
    port = free_port()
    answers, answered = [], threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="anonymous")

    def on_connect(c, userdata, flags, reason_code, properties):
        answers.append(reason_code)
        answered.set()

    client.on_connect = on_connect
    with Mosquitto(str(tmp_path), port=port, lines=_shipped_config(tmp_path, port), cwd=ROOT):
        client.connect("127.0.0.1", port, keepalive=5)
        client.loop_start()
        try:
            assert answered.wait(5)
        finally:
            client.disconnect()
            client.loop_stop()
    assert answers[0].is_failure and "authoriz" in str(answers[0]).lower()
