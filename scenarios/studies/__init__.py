"""Studies run on the simulator or real nodes: the Raft paper's Figure 16 (figure16.py), the
planted-bug hunt (bughunt.py), storage engines under kill -9 (storage_crash.py).
"""
