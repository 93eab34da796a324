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
from typing import Callable, List, NamedTuple, Optional, Tuple

import paho.mqtt.client as mqtt

from .settings import BrokerAddress

__all__ = ["Incoming", "MqttLink"]

log = logging.getLogger(__name__)


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
                 on_connect: Optional[Callable[[], None]] = None):
        self.address = address
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.inbox = queue.Queue()  # of Incoming
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
            return self.inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

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
        self.inbox.put(Incoming(message.topic, bytes(message.payload), time.monotonic()))
