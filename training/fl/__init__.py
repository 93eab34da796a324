"""Federated simulation in PyTorch on fedcore's round engine.

The server and the clients are fedcore.rounds' RoundServer / RoundClient with
an in-process transport, so every byte counted here is a byte the MQTT
coordinator would carry; only the local training is torch (plain SGD, QAT or
FLoCoRA adapters). See training.fl.simulation.run and `python -m training.fl --help`.
"""
