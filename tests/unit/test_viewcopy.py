"""The viewing copy's bond to the signed plaintext: cutting packets out and putting them back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.viewcopy import CopyError, cut, rebuild


@given(st.binary(min_size=1, max_size=400), st.lists(st.tuples(st.integers(0, 399), st.integers(1, 40)), max_size=8))
def test_rebuild_undoes_cut(plaintext: bytes, spans: list[tuple[int, int]]) -> None:
    holes: list[tuple[int, int]] = []
    end = 0
    for start, length in sorted(spans):
        start = max(start, end)
        if start + length > len(plaintext):
            break
        holes.append((start, length))
        end = start + length
    packets = [plaintext[o:o + n] for o, n in holes]
    residue = cut(plaintext, holes)
    assert len(residue) == len(plaintext) - sum(n for _, n in holes)
    assert rebuild(residue, holes, packets) == plaintext


def test_rebuild_refuses_packets_that_do_not_fit() -> None:
    plaintext = b"head-AAAA-mid-BBBBBB-tail"
    holes = [(5, 4), (14, 6)]
    residue = cut(plaintext, holes)
    assert residue == b"head--mid--tail"
    with pytest.raises(CopyError, match="1 packet"):
        rebuild(residue, holes, [b"AAAA"])
    with pytest.raises(CopyError, match="packet 1 is 5 bytes"):
        rebuild(residue, holes, [b"AAAA", b"BBBBB"])
    # same lengths, other bytes: rebuilds, and the plaintext's hash is what tells them apart
    assert rebuild(residue, holes, [b"AAAA", b"BBBBBC"]) != plaintext
