"""The pure pieces of a multi-node cluster: the inter-node wire format (wire.py) and one
authenticated peer connection as a state machine (peer.py). The hosts carry their bytes."""
