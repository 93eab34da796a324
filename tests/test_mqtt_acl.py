"""The shipped Mosquitto config and ACL (brokers/): with passwords made by
brokers/make_passwords.sh, a device publishes on its own topics only."""

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from fedlink.chunks import chunk_topic
from fedlink.link import MqttLink
from fedlink.protocol import Topics
from fedlink.settings import parse_broker
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
            device.publish(chunk_topic(topics.update("client-002", "p1"), 0), b"spoofed update")
            device.publish(topics.presence("client-002"), b"spoofed presence")
            device.publish(topics.round, b"spoofed announcement")
            device.publish(topics.ack("client-002"), b"spoofed ack")
            device.publish(topics.presence("client-001"), b"own presence")
            device.publish(chunk_topic(topics.update("client-001", "p1"), 0), b"own update")
            # What a device may read: the run's public topics and its own acks, not others' traffic.
            coordinator.publish(chunk_topic(topics.update("client-002", "p1"), 0), b"someone else's update")
            coordinator.publish(topics.ack("client-002"), b"someone else's ack")
            coordinator.publish(topics.ack("client-001"), b"own ack")
            coordinator.publish(topics.round, b"announcement")
            coordinator.publish(chunk_topic(topics.model, 3), b"model chunk")
            deadline = time.monotonic() + 5
            while (len(coordinator.messages) < 7 or len(device.messages) < 3) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            coordinator.close()
            device.close()
    # Assert
    received = [(t, p) for t, p in coordinator.messages
                if not p.startswith((b"someone", b"own ack", b"announ", b"model"))]
    assert received == [(topics.presence("client-001"), b"own presence"),
                        (chunk_topic(topics.update("client-001", "p1"), 0), b"own update")]
    assert sorted(device.messages) == [(topics.ack("client-001"), b"own ack"),
                                       (chunk_topic(topics.model, 3), b"model chunk"),
                                       (topics.round, b"announcement")]


def test_anonymous_clients_are_refused_by_the_shipped_config(tmp_path):
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


# ---------------------------------------------------------------- `make broker` (brokers/run_mosquitto.sh)

SCRIPT = os.path.join(ROOT, "brokers", "run_mosquitto.sh")


def _listen_addresses(port):
    """The local addresses listening on `port`, read from /proc/net/tcp and tcp6."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as handle:
            for line in handle.read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                found.add(str(ipaddress.ip_address(words)))
    return found


def _passwords(folder, *users):
    made = subprocess.run([os.path.join(ROOT, "brokers", "make_passwords.sh"), os.path.join(folder, "passwd"),
                           *users], capture_output=True, text=True, check=True, timeout=30)
    return dict(line.split() for line in made.stdout.splitlines())


class _ScriptBroker:
    """brokers/run_mosquitto.sh as a process (it execs mosquitto), optionally as another user."""

    def __init__(self, args, as_uid=None):
        command = [SCRIPT, *args]
        if as_uid is not None:
            command = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", *command]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd="/")

    def wait_listening(self, port, timeout=10.0):
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            if self.process.poll() is not None:
                break
            if _listen_addresses(port):
                return self
            time.sleep(0.05)
        pytest.fail(f"the broker did not listen on {port}: {self.output()}")

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def uid(self):
        with open(f"/proc/{self.process.pid}/status") as handle:
            return int(next(line for line in handle if line.startswith("Uid:")).split()[1])

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _require_script_tools():
    require_mosquitto()
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")


@pytest.fixture
def state_dir():
    """A state folder under /tmp, which the broker's own user can traverse (pytest's tmp_path is closed)."""
    folder = tempfile.mkdtemp(prefix="fl-broker-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_make_broker_starts_as_the_caller_on_loopback_only(tmp_path, state_dir):
    """Before: as root Mosquitto dropped to user mosquitto and could not read the 0600 password
    file; and it listened in plaintext on every interface."""
    _require_script_tools()
    passwords = _passwords(str(tmp_path), "coordinator", "client-001")
    port = free_port()

    broker = _ScriptBroker(["--port", str(port), "--state", state_dir, "--passwd", str(tmp_path / "passwd")])
    try:
        broker.wait_listening(port)
        watcher = Watcher(f"mqtt://127.0.0.1:{port}", "fl/#", "coordinator", passwords["coordinator"])
        watcher.publish("fl/x/round", b"hello")
        deadline = time.monotonic() + 5
        while not watcher.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.close()
        addresses, uid = _listen_addresses(port), broker.uid()
    finally:
        broker.stop()
    assert watcher.messages == [("fl/x/round", b"hello")], broker.output()
    assert addresses == {"127.0.0.1"}
    if os.geteuid() == 0:
        import pwd

        assert uid == pwd.getpwnam("mosquitto").pw_uid  # dropped its privileges, still read the passwords
        assert oct(os.stat(os.path.join(state_dir, "passwd")).st_mode & 0o777) == "0o600"


def test_make_broker_starts_as_an_unprivileged_user(state_dir):
    _require_script_tools()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the script as another user (as a user, the test above is it)")
    nobody = 65534
    if subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "test", "-x", SCRIPT],
                      timeout=10).returncode != 0:
        pytest.skip("the repository is not readable by user nobody")
    os.chown(state_dir, nobody, nobody)
    made = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                           os.path.join(ROOT, "brokers", "make_passwords.sh"), os.path.join(state_dir, "passwd"),
                           "coordinator"], capture_output=True, text=True, timeout=30, check=True)
    password = made.stdout.split()[1]
    port = free_port()

    broker = _ScriptBroker(["--port", str(port), "--state", os.path.join(state_dir, "state"),
                            "--passwd", os.path.join(state_dir, "passwd")], as_uid=nobody)
    try:
        broker.wait_listening(port)
        watcher = Watcher(f"mqtt://127.0.0.1:{port}", "fl/#", "coordinator", password)
        watcher.close()
        uid = broker.uid()
    finally:
        broker.stop()
    assert uid == nobody, broker.output()


def test_make_broker_listens_where_told_and_offers_tls(tmp_path, state_dir, caplog):
    import ssl

    import paho.mqtt.client as mqtt
    _require_script_tools()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    passwords = _passwords(str(tmp_path), "coordinator")
    subprocess.run([os.path.join(ROOT, "brokers", "make_tls.sh"), "--out", str(tmp_path / "tls"), "localhost",
                    "127.0.0.1"], capture_output=True, check=True, timeout=60)
    plain_port, tls_port = free_port(), free_port()
    common = ["--state", state_dir, "--passwd", str(tmp_path / "passwd")]

    every = _ScriptBroker(["--port", str(plain_port), "--host", "0.0.0.0", *common])
    try:
        every.wait_listening(plain_port)
        assert _listen_addresses(plain_port) == {"0.0.0.0"}
    finally:
        every.stop()

    answers = []
    secure = _ScriptBroker(["--tls", "--port", str(tls_port), "--tls-dir", str(tmp_path / "tls"), *common])
    try:
        secure.wait_listening(tls_port)
        for use_tls in (True, False):
            client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="coordinator")
            client.username_pw_set("coordinator", passwords["coordinator"])
            if use_tls:
                client.tls_set(ca_certs=str(tmp_path / "tls" / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
            connected = []
            client.on_connect = lambda c, u, f, reason, p, out=connected: out.append(not reason.is_failure)
            try:
                client.connect("127.0.0.1", tls_port, keepalive=5)
                client.loop_start()
                deadline = time.monotonic() + (3 if use_tls else 1)
                while not connected and time.monotonic() < deadline:
                    time.sleep(0.05)
            except (OSError, ssl.SSLError):
                pass
            finally:
                client.loop_stop()
                client.disconnect()
            answers.append(connected == [True])
        # A certificate our CA did not sign: the link names the TLS failure, not "not reachable".
        subprocess.run([os.path.join(ROOT, "brokers", "make_tls.sh"), "--out", str(tmp_path / "other"),
                        "localhost", "127.0.0.1"], capture_output=True, check=True, timeout=60)
        with caplog.at_level(logging.INFO, logger="fedlink.link"):
            link = MqttLink(parse_broker(f"mqtts://coordinator@127.0.0.1:{tls_port}"), "coordinator", [],
                            ca_file=str(tmp_path / "other" / "ca.crt"), reconnect=(0.1, 0.2)).start()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any("TLS with" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
            link.stop()
        failures = [r.getMessage() for r in caplog.records if "TLS with" in r.getMessage()]
        assert failures and "certificate verify failed" in failures[0] and "--ca-file" in failures[0]
        assert not link.connected.is_set()
    finally:
        secure.stop()
    assert answers == [True, False], secure.output()  # TLS with the CA connects; plain MQTT does not


def test_a_device_cannot_take_over_another_devices_session(tmp_path, state_dir):
    """use_username_as_clientid: before, client-001 connecting with the client id "client-002"
    disconnected client-002 and made the broker publish client-002's last will."""
    import paho.mqtt.client as mqtt
    _require_script_tools()
    passwords = _passwords(str(tmp_path), "coordinator", "client-001", "client-002")
    port = free_port()
    topics = Topics("take")

    broker = _ScriptBroker(["--port", str(port), "--state", state_dir, "--passwd", str(tmp_path / "passwd")])
    clients = []
    try:
        broker.wait_listening(port)
        coordinator = Watcher(f"mqtt://127.0.0.1:{port}", topics.base + "/#", "coordinator", passwords["coordinator"])
        for user, client_id in (("client-002", "client-002"), ("client-001", "client-002")):
            client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
            client.username_pw_set(user, passwords[user])
            client.will_set(topics.presence(user), b"offline", qos=1)
            connected = threading.Event()
            client.on_connect = lambda c, u, f, reason, p, event=connected: event.set()
            client.connect("127.0.0.1", port, keepalive=5)
            client.loop_start()
            assert connected.wait(5)
            clients.append(client)
        time.sleep(1.0)  # a takeover would have disconnected the first client by now
        first_still_connected = clients[0].is_connected()
        wills = [m for m in coordinator.messages if m[1] == b"offline"]
        coordinator.close()
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
        broker.stop()
    assert first_still_connected and wills == [], broker.output()
