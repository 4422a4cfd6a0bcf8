"""The live-node fuzz driver (scenarios/fuzz/mqtt.py): a short run must pass, and its canary must
be able to fail."""

from __future__ import annotations

import asyncio
import json

import pytest

from scenarios.fuzz import mqtt as fuzz_mqtt


@pytest.mark.integration
@pytest.mark.smoke
def test_short_fuzz_run_against_a_live_node(tmp_path) -> None:
    out = tmp_path / "fuzz.json"
    status = fuzz_mqtt.main(["--inputs", "400", "--canary-every", "200", "--concurrency", "16",
                             "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == 0, result
    assert result["alive"] and result["canaries"] == 2 and result["tracebacks"] == 0
    assert result["protocol_errors"] > 0  # the inputs really were hostile


def test_inputs_are_seeded() -> None:
    import random

    a = [fuzz_mqtt.make_input(random.Random(5)) for _ in range(3)]
    b = [fuzz_mqtt.make_input(random.Random(5)) for _ in range(3)]
    assert a == b and all(chunks and all(chunks) for chunks in a)


def test_canary_fails_without_a_broker() -> None:
    with pytest.raises(OSError):
        asyncio.run(fuzz_mqtt.canary(fuzz_mqtt.free_port(), 1))
