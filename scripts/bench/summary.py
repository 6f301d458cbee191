"""The verdict of ``make bench``: each headline figure beside its goal, as a short table.

The goals are the ones the sections record beside their figures (``goal``, ``goal_ratio``,
``cap_goal``, ``dropped_goal``, ``resent_goal_max_chunks_per_cut``); a figure without a goal is
listed for information, its verdict ``-``. Nothing here asserts: timings depend on the machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Seconds each section took on this project's 2-core development machine, busy with other work
# (make bench, December 2026: 9 min 21 s in all), full run and --quick. The agent section since records the
# street scene twice (any CPU, then one core) and lets a 120 s pre-event buffer fill first in a full run:
# its --quick took 44 s; the full figure is that estimate (two 60 s recordings, 120 s of filling, start-ups).
SECTION_WALL_S: dict[str, tuple[int, int]] = {
    "evidence": (25, 10),
    "agent": (275, 45),
    "vs_ffmpeg": (150, 35),
    "sync": (310, 140),
    "hq_connections": (15, 10),
    "hq_fleet": (150, 90),
    "live": (110, 80),
    "tlog": (90, 30),
    "ops_map": (240, 120),
    "playback": (90, 40),
}


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    measured: str
    goal: str
    ratio: float | None  # the figure against its reference (openssl, ffmpeg, the cap), when it has one
    met: bool | None  # None: no goal, or the figure is missing


def estimate_s(sections: Iterable[str], quick: bool) -> int:
    return sum(SECTION_WALL_S[name][1 if quick else 0] for name in sections)


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any, unit: str = "", digits: int = 2) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "missing"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _verdict(value: Any, ok: Callable[[float], bool]) -> bool | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return ok(float(value))


def _at_least(goal: float) -> Callable[[float], bool]:
    return lambda v: v >= goal


def _at_most(goal: float) -> Callable[[float], bool]:
    return lambda v: v <= goal


def evidence_rows(section: Mapping[str, Any]) -> list[Row]:
    rows = []
    sealing = _get(section, "sealing") or {}
    for key in sorted((k for k in sealing if k.startswith("chunk_")), key=lambda k: int(k[6:].rstrip("k"))):
        part = sealing[key]
        goal = part.get("goal", sealing.get("goal_ratio"))
        ratio = part.get("ratio_cpu")
        rows.append(Row(
            f"sealing, {key[len('chunk_'):]} chunks (per CPU s)",
            f"{_num(_get(part, 'sealing', 'mb_per_cpu_s'), ' MB/s', 1)} (openssl AES-GCM "
            f"{_num(part.get('openssl_aes_256_gcm_mb_per_s'), '', 1)})",
            f">= {goal} x openssl" if goal is not None else "-",
            ratio,
            _verdict(ratio, _at_least(goal)) if goal is not None else None,
        ))
    for label in ("public", "with_hq_key"):
        rate = _get(section, "verification", label, "mb_per_s")
        if rate is not None:
            rows.append(Row(f"verification, {label.replace('_', ' ')}", _num(rate, " MB/s", 1), "-", None, None))
    return rows


def agent_rows(section: Mapping[str, Any]) -> list[Row]:
    out = []
    for key, label in (("process", "agent 1080p30 street"), ("one_core", "agent 1080p30 street, 1 core")):
        if key not in section:
            continue
        dropped = _get(section, key, "frames", "dropped_total")
        goal = _get(section, key, "frames", "dropped_goal")
        filled = _get(section, key, "memory", "pre_event_before_start", "buffered_s")
        if filled is None:  # results of a bench from before the agent reported its buffer
            filled = _get(section, key, "pre_event_filled_s_at_start")
        held_mib = _get(section, key, "memory", "pre_event_before_start", "buffered_mib")
        held = f", {_num(held_mib, ' MiB', 1)} of it" if held_mib is not None else ""
        out += [
            Row(f"{label}: CPU per second of footage", _num(_get(section, key, "cpu", "cpu_s_per_footage_s"),
                                                            " s/s", 3), "-", None, None),
            Row(f"{label}: peak memory (pre-event {_num(filled, ' s', 0)} buffered{held})",
                _num(_get(section, key, "memory", "peak_rss_mib"), " MiB", 1), "-", None, None),
            Row(f"{label}: frames dropped", _num(dropped), _num(goal), None,
                _verdict(dropped, _at_most(goal)) if goal is not None else None),
        ]
    return out


def vs_ffmpeg_rows(section: Mapping[str, Any]) -> list[Row]:
    ratio = section.get("ratio_agent_over_ffmpeg")
    goal = section.get("goal", section.get("goal_ratio"))
    return [Row(
        "agent vs ffmpeg: CPU per second of the clip",
        f"{_num(_get(section, 'agent', 'cpu', 'cpu_s_per_footage_s'), ' s/s', 3)} "
        f"(ffmpeg {_num(_get(section, 'ffmpeg', 'cpu_s_per_footage_s'), '', 3)})",
        f"<= {goal} x ffmpeg" if goal is not None else "-",
        ratio,
        _verdict(ratio, _at_most(goal)) if goal is not None else None,
    )]


def sync_rows(section: Mapping[str, Any]) -> list[Row]:
    s = section.get("summary") or {}
    rows = [Row("sync: upload rate (uncapped)", f"{_num(s.get('uncapped_sync_MB_per_s'), ' MB/s', 1)} "
                f"(curl {_num(s.get('uncapped_curl_MB_per_s'), '', 1)})", "-", s.get("ratio_sync_over_curl"), None)]
    cap_goal, capped = s.get("cap_goal"), s.get("ratio_capped_achieved_over_cap")
    rows.append(Row("sync: rate under a bandwidth cap", _num(capped, " of the cap"),
                    f">= {cap_goal} of the cap" if cap_goal is not None else "-", capped,
                    _verdict(capped, _at_least(cap_goal)) if cap_goal is not None else None))
    resent_goal, worst = s.get("resent_goal_max_chunks_per_cut"), s.get("worst_run_resent_chunks_per_cut")
    rows.append(Row("sync: chunks re-sent per cut (worst run)", _num(worst), f"<= {resent_goal}", None,
                    _verdict(worst, _at_most(resent_goal)) if resent_goal is not None else None))
    drop_goal = s.get("dropped_goal")
    for mode, dropped in (s.get("recorder_dropped_while_syncing") or {}).items():
        rows.append(Row(f"sync: frames dropped while syncing ({mode})", _num(dropped), _num(drop_goal), None,
                        _verdict(dropped, _at_most(drop_goal)) if drop_goal is not None else None))
    return rows


def hq_connection_rows(section: Mapping[str, Any]) -> list[Row]:
    s = section
    return [
        Row("hq: memory per idle TLS connection", f"{_num(s.get('memory_per_idle_connection_kB'), ' kB', 1)} "
            f"(plain {_num(s.get('memory_per_idle_plain_connection_kB'), '', 1)})", "-", None, None),
        Row(f"hq: RSS after {s.get('connections')} unsigned 4 MiB PATCHes",
            f"{_num(s.get('rss_after_unsigned_4MiB_patches_MB'), ' MB', 1)} "
            f"(at rest {_num(s.get('rss_at_rest_MB'), '', 1)})", "-", None, None),
    ]


def hq_fleet_rows(section: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for nodes in (1, 2):
        s = section.get(f"nodes_{nodes}") or {}
        if "error" in s:
            rows.append(Row(f"hq fleet, {nodes} node(s): failed", str(s["error"])[:60], "-", None, False))
            continue
        ing, hb = s.get("ingest") or {}, s.get("heartbeats") or {}
        r = ing.get("ratios") or {}
        rows += [
            Row(f"hq fleet, {nodes} node(s): verified ingest", f"{_num(ing.get('MB_per_s'), ' MB/s', 1)} "
                f"({_num(ing.get('MB_per_cpu_s'), ' MB/CPU-s', 1)})", "-", r.get("vs_curl_into_nginx"), None),
            Row(f"hq fleet, {nodes} node(s): last byte to receipt p50/p99",
                f"{_num(ing.get('last_byte_to_receipt_p50_s'), '', 3)}/"
                f"{_num(ing.get('last_byte_to_receipt_p99_s'), ' s', 3)}", "-", None, None),
            Row(f"hq fleet, {nodes} node(s): heartbeats, 1,000 units",
                f"{_num(hb.get('per_s'), '/s', 1)} p99 {_num(hb.get('p99_ms'), ' ms', 1)}", "-", None, None),
        ]
    return rows


def live_rows(section: Mapping[str, Any]) -> list[Row]:
    g = section.get("glass_to_glass_ms") or {}
    cpu = section.get("agent_cpu_s_per_s") or {}
    rec, rec_goal = section.get("recovery_after_burst_s"), section.get("recovery_goal_s")
    drops, drop_goal = section.get("recorder_dropped_while_streaming"), section.get("dropped_goal")
    return [
        Row("live: glass to glass, median", _num(g.get("median"), " ms", 1), f"<= {g.get('goal_median')} ms", None,
            _verdict(g.get("median"), _at_most(g.get("goal_median") or 0))),
        Row("live: glass to glass, p95", _num(g.get("p95"), " ms", 1), f"<= {g.get('goal_p95')} ms", None,
            _verdict(g.get("p95"), _at_most(g.get("goal_p95") or 0))),
        Row(f"live: picture back after a {section.get('burst_s')} s loss burst, chromium", _num(rec, " s", 2),
            f"<= {rec_goal} s", None, _verdict(rec, _at_most(rec_goal or 0))),
        Row("live: the same at the aiortc viewer", _num(section.get("recovery_after_burst_aiortc_s"), " s", 2),
            "-", None, None),
        Row("live: operator's request to the first frame", _num(section.get("request_to_first_frame_s"), " s", 2),
            f"<= {section.get('request_goal_s')} s", None,
            _verdict(section.get("request_to_first_frame_s"), _at_most(section.get("request_goal_s") or 0))),
        Row("live: agent's extra CPU while streaming", _num(cpu.get("extra_for_streaming"), " CPU-s/s", 3), "-",
            None, None),
        Row("live: frames dropped while streaming", _num(drops), _num(drop_goal), None,
            _verdict(drops, _at_most(drop_goal)) if drop_goal is not None else None),
    ]


def tlog_rows(section: Mapping[str, Any]) -> list[Row]:
    goal = section.get("goal")
    rows: list[Row] = []
    for engine in ("sqlite", "postgresql"):
        s = section.get(engine) or {}
        if "error" in s:
            rows.append(Row(f"tlog appends, {engine}: failed", str(s["error"])[:60], "-", None, False))
            continue
        for key, label in (("one_thread", "one thread"), ("racing", "4 threads racing")):
            rate = _get(s, key, "per_s")
            rows.append(Row(f"tlog appends/s, {engine}, {label}", _num(rate, "/s", 1),
                            f">= {goal}/s (1,000 units)" if goal is not None else "-",
                            None if rate is None or not goal else round(rate / goal, 2),
                            _verdict(rate, _at_least(goal)) if goal is not None else None))
    for key, label in (("proofs_after_a_day", "a day"), ("proofs_after_a_year", "a year")):
        p = section.get(key) or {}
        rows.append(Row(f"tlog proofs after {label} ({_num(p.get('tree_size'))} leaves)",
                        f"inclusion {_num(p.get('inclusion_bytes'), ' B')}, receipt header "
                        f"{_num(p.get('receipt_header_bytes'), ' B')}, heartbeat answer "
                        f"{_num(p.get('heartbeat_answer_bytes'), ' B')}", "-", None, None))
    return rows


def ops_map_rows(section: Mapping[str, Any]) -> list[Row]:
    units = section.get("units")
    first = _get(section, "first_render_s", "median")
    first_goal = _get(section, "first_render_s", "goal")
    latency = _get(section, "heartbeat_to_marker_s", "p50")
    latency_goal = _get(section, "heartbeat_to_marker_s", "goal_p50")
    return [
        Row(f"map: first render with {units} units (median)", _num(first, " s", 2),
            f"<= {first_goal} s" if first_goal is not None else "-", None,
            _verdict(first, _at_most(first_goal)) if first_goal is not None else None),
        Row("map: heartbeat to marker moved (p50; p99 "
            f"{_num(_get(section, 'heartbeat_to_marker_s', 'p99'), ' s', 3)})", _num(latency, " s", 3),
            f"<= {latency_goal} s" if latency_goal is not None else "-", None,
            _verdict(latency, _at_most(latency_goal)) if latency_goal is not None else None),
    ]


def playback_rows(section: Mapping[str, Any]) -> list[Row]:
    median = _get(section, "press_to_first_frame_s", "median")
    goal = _get(section, "press_to_first_frame_s", "goal_median")
    return [Row(f"playback: play pressed to first frame (median; p95 "
                f"{_num(_get(section, 'press_to_first_frame_s', 'p95'), ' s', 3)})", _num(median, " s", 3),
                f"<= {goal} s" if goal is not None else "-", None,
                _verdict(median, _at_most(goal)) if goal is not None else None)]


SECTION_ROWS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "evidence": evidence_rows,
    "agent": agent_rows,
    "vs_ffmpeg": vs_ffmpeg_rows,
    "sync": sync_rows,
    "hq_connections": hq_connection_rows,
    "hq_fleet": hq_fleet_rows,
    "live": live_rows,
    "tlog": tlog_rows,
    "ops_map": ops_map_rows,
    "playback": playback_rows,
}


def rows(doc: Mapping[str, Any]) -> list[Row]:
    """The headline rows of every section that ran; a failed section is one row with its error."""
    out: list[Row] = []
    for name, section in (doc.get("sections") or {}).items():
        if "error" in section:
            out.append(Row(f"{name}: section failed", str(section["error"])[:60], "-", None, False))
            continue
        out += SECTION_ROWS[name](section)
    return out


def render(table: Iterable[Row]) -> str:
    """A fixed-width table: figure, measured, goal, ratio, met."""
    lines = [("figure", "measured", "goal", "ratio", "met")]
    for row in table:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        lines.append((row.figure, row.measured, row.goal, ratio, met))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True)) + "  " + line[4]
        for line in lines
    )


def verdict(table: Iterable[Row]) -> str:
    """One line: how many goals were met, and which were not."""
    judged = [row for row in table if row.met is not None]
    missed = [row.figure for row in judged if not row.met]
    if not missed:
        return f"all {len(judged)} goals met"
    return f"{len(judged) - len(missed)} of {len(judged)} goals met; missed: {'; '.join(missed)}"
