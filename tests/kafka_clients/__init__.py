"""Real Kafka clients (kafka-python, confluent-kafka, aiokafka, kcat) against the broker."""
