"""Transitional: `render` moved to `real/node/metrics.py` (prometheus-client lives in the shell).

real/node/server.py still imports `real.mqtt.metrics.render`; its rewrite should build
`real.node.metrics.NodeMetrics(mqtt=..., kafka=...)` once and serve `.render()`, and then this
file goes. The import below is deliberately lazy, so the pure core never loads the shell.
"""

from __future__ import annotations

from typing import Any


def render(broker: Any) -> str:
    from real.node.metrics import render as render_node  # noqa: PLC0415 (see the docstring)

    return render_node(broker)
