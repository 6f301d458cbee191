"""A machine-readable time code for simulated frames: UTC milliseconds and frame counter as a strip of cells.

The simulated camera burns a human-readable clock into its frames; a strip of 64 black and white
cells along the bottom edge carries the same instant for machines (the live-view tests read it
back from a browser's decoded frames to measure glass-to-glass latency). Layout, most significant
bit first: 48 bits of UTC milliseconds, 8 bits of the frame index (mod 256), 8 bits of checksum
(the sum of the seven bytes before it, mod 256). A 1 is luma 235, a 0 luma 16; the strip is
``strip_rows(height)`` rows tall and survives scaling to a quarter of the width and lossy coding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CELLS = 64
ONE_LUMA = 235
ZERO_LUMA = 16


def strip_rows(height: int) -> int:
    """How many rows the strip takes at the bottom of a picture ``height`` rows tall (even)."""
    return max(8, (height // 20) & ~1)


def code_bits(utc_ms: int, index: int) -> list[int]:
    """The 64 bits for ``utc_ms`` and frame ``index``, most significant first."""
    payload = (utc_ms % (1 << 48)).to_bytes(6, "big") + bytes([index % 256])
    word = payload + bytes([sum(payload) % 256])
    return [(byte >> (7 - i)) & 1 for byte in word for i in range(8)]


def draw(luma: npt.NDArray[np.uint8], u: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8],
         utc_ms: int, index: int) -> None:
    """Burn the strip into a yuv420p picture's planes in place (chroma neutral under it)."""
    h, w = luma.shape
    rows = strip_rows(h)
    edges = [(i * w // CELLS) & ~1 for i in range(CELLS + 1)]
    for bit, x0, x1 in zip(code_bits(utc_ms, index), edges, edges[1:], strict=False):
        luma[h - rows:, x0:x1] = ONE_LUMA if bit else ZERO_LUMA
    u[(h - rows) // 2:, :] = 128
    v[(h - rows) // 2:, :] = 128


def read(luma: npt.NDArray[np.uint8]) -> tuple[int, int] | None:
    """(utc_ms mod 2^48, index mod 256) from a picture's luma (any scale), or None when the
    checksum does not hold (a frame mid-recovery, or no strip)."""
    h, w = luma.shape
    row = h - max(2, strip_rows(h) // 2)
    centres = [int((i + 0.5) * w / CELLS) for i in range(CELLS)]
    bits = [1 if int(luma[row, x]) >= 128 else 0 for x in centres]
    word = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, CELLS, 8))
    if sum(word[:7]) % 256 != word[7]:
        return None
    return int.from_bytes(word[:6], "big"), word[6]
