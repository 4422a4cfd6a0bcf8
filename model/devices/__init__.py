"""Simulated devices behind the same ports as the real ones: the network between nodes
(net.py), client connections (conn.py), a filesystem with power-loss semantics (fs.py), an
ordered key-value store (kv.py) and an object store (objstore.py).
"""
