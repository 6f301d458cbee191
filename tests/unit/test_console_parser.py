"""Console line assembly: modes, echo, line editing, length limit, garbage; fuzzed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.console.parser import Interrupted, Line, LineAssembler, Rejected


def feed_all(p: LineAssembler, *chunks: bytes) -> tuple[list[object], bytes]:
    events: list[object] = []
    echo = b""
    for c in chunks:
        ev, e = p.feed(c)
        events += ev
        echo += e
    return events, echo


def test_a_typed_line_is_human_and_echoed() -> None:
    events, echo = feed_all(LineAssembler(), b"status\r")
    assert events == [Line("status", machine=False)]
    assert echo == b"status\r\n"


def test_a_line_starting_with_a_brace_is_machine_and_not_echoed() -> None:
    events, echo = feed_all(LineAssembler(), b'{"cmd":"status"}\n')
    assert events == [Line('{"cmd":"status"}', machine=True)]
    assert echo == b""


def test_cr_lf_and_crlf_each_end_one_line() -> None:
    events, _ = feed_all(LineAssembler(), b"a\rb\nc\r\nd\n\r")
    assert [e.text for e in events if isinstance(e, Line)] == ["a", "b", "c", "d", ""]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    events, _ = feed_all(LineAssembler(), b"help\r", b"\nversion\r\n")
    assert [e.text for e in events if isinstance(e, Line)] == ["help", "version"]


def test_backspace_and_del_rub_out_with_echo() -> None:
    events, echo = feed_all(LineAssembler(), b"stax\x08tus", b"x\x7f\r")
    assert events == [Line("status", machine=False)]
    assert echo == b"stax\b \btusx\b \b\r\n"


def test_backspace_on_an_empty_line_is_harmless_and_silent() -> None:
    events, echo = feed_all(LineAssembler(), b"\x08\x08\x7fhelp\r")
    assert events == [Line("help", machine=False)] and echo == b"help\r\n"


def test_backspace_removes_a_whole_utf8_character() -> None:
    events, _ = feed_all(LineAssembler(), "note é".encode() + b"\x7f" + b"e\r")
    assert events == [Line("note e", machine=False)]


def test_rubbing_out_the_brace_makes_the_line_human_again() -> None:
    events, _ = feed_all(LineAssembler(), b"{\x7fhelp\r")
    assert events == [Line("help", machine=False)]


def test_ctrl_u_erases_the_line_and_ctrl_c_abandons_it() -> None:
    events, echo = feed_all(LineAssembler(), b"reboot\x15help\r")
    assert events == [Line("help", machine=False)]
    assert echo.count(b"\b \b") == len("reboot")
    events, echo = feed_all(LineAssembler(), b"reboot\x03")
    assert events == [Interrupted()] and echo.endswith(b"^C\r\n")


def test_arrow_keys_and_other_escape_sequences_are_swallowed() -> None:
    events, echo = feed_all(LineAssembler(), b"st\x1b[Aat\x1b[1;5Dus\x1bOB\r")
    assert events == [Line("status", machine=False)]
    assert b"\x1b" not in echo


def test_other_control_bytes_are_ignored_and_tab_is_a_space() -> None:
    events, _ = feed_all(LineAssembler(), b"\x00lo\x11g\t5\x13\r")
    assert events == [Line("log 5", machine=False)]


def test_an_overlong_line_is_rejected_whole_and_the_next_one_is_clean() -> None:
    p = LineAssembler(max_line=32)
    events, echo = feed_all(p, b"x" * 20, b"y" * 40, b"z" * 5, b"\rhelp\r")
    assert events == [Rejected("too-long", machine=False, length=65), Line("help", machine=False)]
    assert len(echo) <= 20 + len(b"help\r\n") + 2  # echo stops at the limit


def test_an_overlong_machine_line_is_reported_as_machine() -> None:
    events, _ = feed_all(LineAssembler(max_line=16), b'{"cmd":"' + b"a" * 100 + b'"}\n')
    assert events == [Rejected("too-long", machine=True, length=110)]


def test_a_line_that_is_not_utf8_is_rejected() -> None:
    events, _ = feed_all(LineAssembler(), b"st\xffatus\r")
    assert events == [Rejected("not-utf8", machine=False, length=7)]


def test_resync_drops_everything_up_to_the_next_line_end() -> None:
    p = LineAssembler()
    feed_all(p, b"half a li")
    p.resync()
    events, echo = feed_all(p, b"ne from before\rstatus\r")
    assert events == [Line("status", machine=False)]
    assert echo == b"status\r\n"


def test_pending_tracks_a_line_in_progress() -> None:
    p = LineAssembler()
    assert not p.pending
    p.feed(b"sta")
    assert p.pending
    p.feed(b"\r")
    assert not p.pending


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(16, 256))
def test_fuzz_never_raises_bounds_lines_and_recovers(chunks: list[bytes], max_line: int) -> None:
    p = LineAssembler(max_line=max_line)
    events, _ = feed_all(p, *chunks)
    for ev in events:
        if isinstance(ev, Line):
            assert len(ev.text.encode()) <= max_line
            assert "\r" not in ev.text and "\n" not in ev.text
    # whatever came before, a fresh line end then a command is read exactly
    p.resync()
    tail, _ = feed_all(p, b"\r\nstatus\r\n")
    assert tail[-1] == Line("status", machine=False)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_fuzz_chunking_does_not_change_the_lines(data: bytes, step: int) -> None:
    whole, _ = feed_all(LineAssembler(), data)
    pieces, _ = feed_all(LineAssembler(), *[data[i : i + step] for i in range(0, len(data), step)])
    # a CRLF split across reads is still one line end, so chunking is invisible
    assert whole == pieces
