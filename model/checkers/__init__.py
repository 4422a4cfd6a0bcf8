"""Oracles over what a run did: Raft safety as it happens (raft.py), and the MQTT, Kafka and
bridge checkers over the clients' histories at the end (mqtt.py, kafka.py, bridge.py).
"""
