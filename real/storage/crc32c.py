"""CRC-32C (Castagnoli), pure Python, table driven (reflected polynomial 0x82F63B78).

This is the checksum Kafka record batches carry. Pure Python costs roughly a microsecond per
byte-ish loop step; a native implementation can replace `crc32c` later behind the same signature.
"""

from __future__ import annotations

POLY_REFLECTED = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    assert len(table) == 256
    assert table[1] == 0xF26B8303  # first non-trivial entry of the published table
    return tuple(table)


TABLE = _make_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of `data`; pass a previous result as `crc` to continue over concatenated data."""
    assert 0 <= crc <= 0xFFFFFFFF, crc
    table = TABLE
    value = crc ^ 0xFFFFFFFF
    for byte in bytes(data):
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    result = value ^ 0xFFFFFFFF
    assert 0 <= result <= 0xFFFFFFFF
    return result
