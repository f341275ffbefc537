"""The chaos run's report: one JSON-ready dict, its text form, and the verdict.

The verdict fails on any lost, duplicated, differing or phantom reading, on any energy beyond the tolerance, on a
drain that did not finish, and on a process that could not be restarted. Each failure names the check and where,
so a red CI line says what broke without opening the logs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .energy import TOLERANCE_MWH, EnergyResult
from .faults import KINDS, Logged
from .reconcile import DeviceResult, Figures
from .watch import Usage

GATEWAY_COUNTERS = ("readings_committed", "duplicates", "readings_published", "readings_confirmed", "resends",
                    "readings_resent", "receipt_ids_stale", "readings_replayed", "syncs_sent", "mqtt_connects",
                    "error_frame_crc", "error_frame_cobs", "error_boot_mismatch")
GATEWAY_QUEUE = ("dropped_at_meter", "dropped_full", "expired", "skipped_unknown", "unconfirmed_trimmed",
                 "dead_lettered")


def failures(devices: list[DeviceResult], energy: list[EnergyResult], drained: bool, errors: list[str]) -> list[str]:
    out = []
    for d in devices:
        for what, n, examples in (("lost", d.lost_count, d.lost), ("duplicated", d.duplicated_count, d.duplicated),
                                  ("differing", d.differing_count, d.differing),
                                  ("phantom", d.phantom_count, d.phantom)):
            if n:
                out.append(f"readings {what}: {n} of device {d.device} (e.g. {'; '.join(examples[:3])})")
    for e in energy:
        for g, diff in e.mismatches().items():
            if diff is None:
                out.append(f"energy {g}: {e.scope}: the consumption API did not answer")
                continue
            line = (f"energy {g}: {e.scope} API {e.api_mwh[g]:.0f} mWh, register {e.expected_mwh} mWh "
                    f"({diff:+.0f} mWh, tolerance {TOLERANCE_MWH:g}; {e.step_backs} step-back(s))")
            if e.reset_minute_mwh and abs(diff + e.reset_minute_mwh) <= TOLERANCE_MWH:
                line += (f" = minus the {e.reset_minute_mwh} mWh a rollup minute without energy_min loses at these "
                         "step-backs: window_samples ignores the minute's energy_min (issue 11)")
            out.append(line)
    if not drained:
        out.append("drain: the gateway still held readings (queued or awaiting a receipt) at the deadline")
    out += [f"fault execution: {e}" for e in errors]
    return out


def build(*, meta: dict[str, Any], faults: list[Logged], devices: list[DeviceResult], figures: Figures,
          energy: list[EnergyResult], gateway: dict[str, int], queue: dict[str, Any], links: tuple[int, int],
          traffic: dict[str, int], usage: dict[str, Usage], drained: bool, errors: list[str]) -> dict[str, Any]:
    fails = failures(devices, energy, drained, errors)
    totals = Counter[str]()
    for d in devices:
        totals.update({"produced": d.produced, "stored": d.stored, "excused": sum(d.excused.values()),
                       "lost": d.lost_count, "duplicated": d.duplicated_count, "differing": d.differing_count,
                       "phantom": d.phantom_count, "meter_dropped": d.meter_dropped})
    return {
        "meta": meta,
        "verdict": "FAIL" if fails else "PASS",
        "failures": fails,
        "faults": [f._asdict() for f in faults],
        "fault_counts": {k: sum(1 for f in faults if f.kind == k) for k in KINDS},
        "readings": dict(totals),
        "devices": [d._asdict() for d in devices],
        "figures": figures._asdict(),
        "gateway_counters": {k: gateway.get(k, 0) for k in GATEWAY_COUNTERS},
        "gateway_queue": {k: queue.get(k, 0) for k in GATEWAY_QUEUE},
        "link_faults_applied": {"corrupted": links[0], "dropped": links[1]},
        "broker_traffic_seen": traffic,
        "energy": [{**e._asdict(), "mismatch_mwh": e.mismatches()} for e in energy],
        "energy_tolerance_mwh": TOLERANCE_MWH,
        "processes": {role: u._asdict() for role, u in usage.items()},
        "drained": drained,
        "errors": errors,
    }


def _mwh(v: float | None) -> str:
    return "no answer" if v is None else f"{v:,.0f}".replace(",", " ")


def text(r: dict[str, Any]) -> str:
    m, t, f = r["meta"], r["readings"], r["figures"]
    lines = [
        f"CDS chaos run: seed {m['seed']}, {m['duration_s']:g} s of faults and load, {m['meters']} meters "
        f"({m['firmware']}), 2 backend replicas",
        f"  wall time: start {m['startup_s']:.1f} s, run {m['run_s']:.1f} s, cut {m['cut_s']:.1f} s, "
        f"drain {m['drain_s']:.1f} s, rollups {m['rollups_s']:.1f} s, checks {m['checks_s']:.1f} s, "
        f"total {m['total_s']:.1f} s",
        "",
        f"Faults ({len(r['faults'])}): " + ", ".join(f"{k} x{n}" for k, n in r["fault_counts"].items()),
    ]
    lines += [f"  {x['start_s']:7.1f} s  {x['kind']:<19} {x['target']:<17} {x['detail']}" for x in r["faults"]]
    lines += [
        "",
        f"Readings: {t['produced']} produced, {t['stored']} stored, {t['excused']} excused "
        f"(dropped or lost at the meter, counted), {t['lost']} lost, {t['duplicated']} duplicated, "
        f"{t['differing']} differing, {t['phantom']} phantom",
        f"  {'device':<17} {'kind':<9} {'boots':>5} {'produced':>8} {'stored':>7} {'excused':>7} {'lost':>5} "
        f"{'dup':>4} {'diff':>5}  why excused",
    ]
    for d in r["devices"]:
        why = ", ".join(f"{n} {k.split(' (')[0]}" for k, n in d["excused"].items()) or "-"
        lines.append(f"  {d['device']:<17} {'firmware' if d['firmware'] else 'sim':<9} {d['boots']:>5} "
                     f"{d['produced']:>8} {d['stored']:>7} {sum(d['excused'].values()):>7} {d['lost_count']:>5} "
                     f"{d['duplicated_count']:>4} {d['differing_count']:>5}  {why}")
    delay = (f"max {f['delay_max_s']} s, p50 {f['delay_p50_s']} s, p99 {f['delay_p99_s']} s "
             f"({f['delay_measured']} of {t['stored']} measured)") if f["delay_measured"] else "not measured"
    g, q, lf, bt = r["gateway_counters"], r["gateway_queue"], r["link_faults_applied"], r["broker_traffic_seen"]
    lines += [
        f"  delay produced -> stored and receipted: {delay}",
        f"  replayed volume: {f['carried_mean']} broker crossings per stored reading (max {f['carried_max']}), "
        f"{f['carried_again']} readings crossed more than once ({bt['batches']} batches and {bt['receipts']} receipts "
        f"seen, {bt['undecodable']} undecodable); gateway re-sent {g['readings_resent']} readings in {g['resends']} "
        f"batches, received {g['duplicates']} duplicates from meters",
        f"  gateway timestamp vs measured: max {f['ts_offset_max_s']} s, p99 {f['ts_offset_p99_s']} s",
        f"  dropped at the meter: {t['meter_dropped']} counted by the meters, {q['dropped_at_meter']} by the gateway; "
        f"gateway losses: dropped_full {q['dropped_full']}, expired {q['expired']}, unconfirmed_trimmed "
        f"{q['unconfirmed_trimmed']}, dead_lettered {q['dead_lettered']}",
        f"  link faults applied: {lf['corrupted']} frames corrupted, {lf['dropped']} dropped; the gateway counted "
        f"{g['error_frame_crc'] + g['error_frame_cobs']} malformed frames, {g['error_boot_mismatch']} boot mismatches",
        "",
        f"Energy, register vs GET /api/v1/analytics/consumo (mWh; tolerance {r['energy_tolerance_mwh']:g} mWh):",
        f"  {'scope':<17} {'register':>11} {'steps':>5} {'15min':>11} {'hour':>11} {'day':>11} {'reset-min':>12}"
        "  mismatch",
    ]
    for e in r["energy"]:
        api = e["api_mwh"]
        bad = ", ".join(f"{k} {'?' if v is None else f'{v:+.0f}'}" for k, v in e["mismatch_mwh"].items()) or "-"
        lines.append(f"  {e['scope']:<17} {_mwh(e['expected_mwh']):>11} {e['step_backs']:>5} "
                     f"{_mwh(api['15min']):>11} {_mwh(api['hour']):>11} {_mwh(api['day']):>11} "
                     f"{_mwh(e['reset_minute_mwh']):>12}  {bad}")
    lines += ["", "Processes (peak RSS from VmHWM, CPU over the whole run, incarnations):"]
    lines += [f"  {role:<14} {u['peak_rss_mb']:>7.1f} MB  {u['cpu_s']:>7.1f} s CPU  x{u['processes']}"
              for role, u in r["processes"].items()]
    lines += ["", f"Verdict: {r['verdict']}"]
    lines += [f"  FAILED {x}" for x in r["failures"]]
    return "\n".join(lines)
