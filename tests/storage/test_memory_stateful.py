"""The reusable engine machine (tests/storage/stateful.py) instantiated for MemoryEngine."""

from __future__ import annotations

from real.storage import MemoryEngine
from tests.storage.stateful import make_engine_machine

# Tight limits so BatchTooLarge and StorageFull are hit often; roomy limits so logs grow long.
TestMemoryTight = make_engine_machine(
    lambda: MemoryEngine(records_max_per_append=4, bytes_max_total=400)
)
TestMemoryRoomy = make_engine_machine(lambda: MemoryEngine(start_offset=7))
