"""The paho-mqtt (2.x) link used by the coordinator and the device clients.

paho does the reconnecting (reconnect_delay_set + its network thread, as its
own documentation advises); this class only re-subscribes and re-publishes the
caller's retained state after each (re)connect, and hands received messages to
the caller's thread through a queue so that no protocol logic runs inside
paho's callbacks.
"""

import logging
import queue
import ssl
import sys
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import paho.mqtt.client as mqtt

from .settings import BrokerAddress

__all__ = ["Incoming", "MqttLink"]

log = logging.getLogger(__name__)

INBOX_BYTES = 32 << 20  # what received messages may hold while they wait for the caller


def _cost(topic: str, payload: bytes) -> int:
    """What a waiting message holds in memory, roughly: its payload, its topic and the record."""
    return len(payload) + len(topic) + 200


class Incoming(NamedTuple):
    topic: str
    payload: bytes
    received: float  # time.monotonic() at arrival


class MqttLink:
    """One MQTT connection. `subscriptions` are (topic filter, qos) pairs made
    again on every connect; `on_connect` (optional) runs after each connect in
    paho's thread, e.g. to publish presence again."""

    def __init__(self, address: BrokerAddress, client_id: str, subscriptions: List[Tuple[str, int]],
                 keepalive: int = 10, will: Optional[Tuple[str, bytes]] = None,
                 reconnect: Tuple[float, float] = (0.2, 5.0), ca_file: Optional[str] = None,
                 on_connect: Optional[Callable[[], None]] = None, inbox_bytes: int = INBOX_BYTES,
                 share_of: Callable[[str], str] = lambda topic: topic):
        self.address = address
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        # Received messages wait here for the caller, in bounded memory: at most `inbox_bytes` in all,
        # and at most half of it from one sender (`share_of(topic)`), so that a flood costs a fixed
        # amount of memory and cannot crowd the others out. A message beyond is dropped and counted
        # (a device re-sends an update until it is acknowledged); one alone always gets in.
        # Senders in `priority` (a coordinator's selected clients) have an inbox of their own of the
        # same size: a flood from anyone else cannot crowd them out.
        self.inbox = queue.Queue()  # of (Incoming, its sender, its cost, whether it came in with priority)
        self.inbox_bytes = inbox_bytes
        self.priority: Set[str] = set()
        self.dropped = 0
        self._share_of = share_of
        self._held: Dict[str, int] = {}  # sender -> bytes waiting
        self._held_total = {False: 0, True: 0}  # bytes waiting, without and with priority
        self._held_lock = threading.Lock()
        self._dropped_noted = 0.0
        self.connected = threading.Event()
        self.connects = 0
        self.on_connect = on_connect  # settable after construction
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True)
        if address.username:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        # Whole models are queued while the broker is away; no cap on the queue.
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(20)
        # Fractions of a second work (paho only multiplies and sleeps): fast tests, quick recovery.
        client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])  # type: ignore[arg-type]
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        self._client = client
        self._keepalive = keepalive

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "MqttLink":
        """Connect in the background; paho retries until the broker answers."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=self._keepalive)
        self._client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, final: Optional[Tuple[str, bytes, bool]] = None) -> None:
        """Publish `final` (topic, payload, retain) if connected, then disconnect."""
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=final[2])
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as error:
                log.warning("%s: final message not sent: %s", self.client_id, error)
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------ traffic

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False when paho refused it (it then says why in the log)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("%s: publish to %s failed: %s", self.client_id, topic, mqtt.error_string(info.rc))
            return False
        return True

    def subscribe(self, topic: str, qos: int = 1) -> None:
        if (topic, qos) not in self.subscriptions:
            self.subscriptions.append((topic, qos))
        if self.connected.is_set():
            self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions = [s for s in self.subscriptions if s[0] != topic]
        if self.connected.is_set():
            self._client.unsubscribe(topic)

    def get(self, timeout: float) -> Optional[Incoming]:
        try:
            incoming, key, size, prior = self.inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        with self._held_lock:
            self._held_total[prior] -= size
            left = self._held[key] - size
            if left:
                self._held[key] = left
            else:
                del self._held[key]
        return incoming

    # ------------------------------------------------------------ paho callbacks

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        self.connects += 1
        log.info("%s: connected to %s:%d (connection %d)", self.client_id, self.address.host,
                 self.address.port, self.connects)
        for topic, qos in self.subscriptions:
            client.subscribe(topic, qos)
        self.connected.set()
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:  # a bug in the hook must not kill paho's thread
                log.exception("%s: on_connect hook failed", self.client_id)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            log.warning("%s: disconnected (%s); paho reconnects", self.client_id, reason_code)
        else:
            log.info("%s: disconnected", self.client_id)

    def _handle_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError`: the exception says why (refused, DNS, TLS).
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError):
            log.warning("%s: TLS with %s:%d failed: %s; retrying (check --ca-file and the broker's "
                        "certificate)", self.client_id, self.address.host, self.address.port, error)
        else:
            log.info("%s: broker %s:%d not reachable yet (%s); retrying", self.client_id,
                     self.address.host, self.address.port, error or "no answer")

    def _handle_message(self, client, userdata, message) -> None:
        topic, payload = message.topic, bytes(message.payload)
        key, size = self._share_of(topic), _cost(topic, payload)
        prior = key in self.priority
        with self._held_lock:
            mine, held = self._held.get(key, 0), self._held_total[prior]
            admitted = held == 0 or (held + size <= self.inbox_bytes and (mine == 0 or mine + size <= self.inbox_bytes // 2))
            if admitted:
                self._held[key] = mine + size
                self._held_total[prior] += size
            else:
                self.dropped += 1
        if admitted:
            self.inbox.put((Incoming(topic, payload, time.monotonic()), key, size, prior))
        elif time.monotonic() - self._dropped_noted >= 5.0:  # a flood logs a line every 5 s, not a line a message
            self._dropped_noted = time.monotonic()
            log.warning("%s: inbox full (%d MiB; one sender may hold half): %d message(s) dropped so far, "
                        "the last from %s", self.client_id, self.inbox_bytes >> 20, self.dropped, key)

