"""real/server/: the pure composition of one TwinMQ node (no I/O, no clock, no threads).

The node's parts (meta Raft replica and state machine, the `ShardStore`, the MQTT broker, the Kafka
broker and the bridge) are wired here once, into a `NodeCore` that both hosts run: the asyncio
host in real/node/ (`twinmq serve`) and the SimPy host in model/. See docs/architecture.md.
"""
