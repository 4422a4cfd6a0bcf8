"""Fuzzers against a live node: MQTT (mqtt.py) and Kafka (kafka.py).
"""
