"""coordinator: the federated-learning server over MQTT (docs/protocol.md).

`python -m coordinator --broker mqtt://host:port --config run.toml` runs a
federation; `python -m coordinator.testbed` a whole testbed on one machine;
`python -m coordinator.broker` the embedded broker. The modules shared with
the devices (protocol, transport) import only the standard library, paho-mqtt
and fedcore.
"""

__all__ = []
