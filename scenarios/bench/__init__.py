"""Benchmarks with their load generators: the real broker against Mosquitto and amqtt
(mqtt.py, mqtt_loadgen.py) and Tansu (kafka.py, kafka_loadgen.py, tansu.py), storage engines
(storage.py) and the simulator's speed (sim.py, bench-sim.toml). Results go to reports/.
"""
