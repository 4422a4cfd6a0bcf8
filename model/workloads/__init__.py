"""What runs against the simulated cluster: the meta client (meta.py), MQTT publishers and
subscribers (mqtt.py), Kafka producers, group consumers and readers (kafka.py). Each client
workload keeps the history its clients observed and judges it at the end of the run."""
