"""The tables `minicnn profile` prints: per kernel family, per launch, one kernel's access sites.

A row's columns: occupancy; GFLOP and minimum MB; coalescing = ideal / actual global sectors
(100% is perfect); bank = shared wavefronts / ideal (1.00 is conflict-free); roofline bound
and estimated time in microseconds; share of the estimated step; the limiting term (see
minicnn.profile.estimate).
"""
from __future__ import annotations

import csv
import io
import textwrap
from collections import defaultdict

from minicnn.profile.estimate import (ISSUE_PER_CLOCK, LAUNCH_OVERHEAD, SHARED_WAVEFRONTS_PER_CLOCK)

WHY = {
    "flop": "at the FP32 roofline; only tensor cores (TF32/BF16 mma) would go faster",
    "dram": "DRAM bandwidth: it moves its bytes once; fuse it with a neighbour to save the round trip",
    "l1": "the load/store unit: too many 32-byte sectors per request (uncoalesced global access)",
    "shared": "shared memory: wavefronts per request, bank conflicts and shared loads per FMA",
    "issue": "instruction issue: address arithmetic around the FMAs (or mma) of its main loop",
    "launch": "launch overhead: the kernel is tiny; fuse it or batch it with its neighbours",
}


def _ratio(numerator: float, denominator: float, empty: float = 1.0) -> float:
    return numerator / denominator if denominator else empty


def _counter_sums(records) -> dict:
    sums = defaultdict(float)
    for r in records:
        c = r.counters
        if c is None:
            continue
        for space in ("global", "shared"):
            for name in ("requests", "units", "ideal_units"):
                sums[space, name] += c.total(space, None, name)
    return sums


def _group_row(name: str, records, estimates, step: float) -> dict:
    sums = _counter_sums(records)
    occupancies = sorted({round(100 * e.occupancy.fraction) for e in estimates if e.occupancy})
    seconds = sum(e.seconds for e in estimates)
    by_limiter = defaultdict(float)
    for e in estimates:
        by_limiter[e.limiter] += e.seconds
    measured = [r.gpu_seconds for r in records]
    first = records[0]
    return {
        "kernel": name,
        "launches": len(records),
        "grid": "x".join(map(str, first.grid)) if len(records) == 1 else "",
        "block": "x".join(map(str, first.block)),
        "occupancy_%": "/".join(map(str, occupancies)) or "n/a",
        "gflop": sum(e.flops for e in estimates) / 1e9,
        "mbytes": sum(e.min_bytes for e in estimates) / 1e6,
        "coalescing_%": 100 * _ratio(sums["global", "ideal_units"], sums["global", "units"]),
        "bank": _ratio(sums["shared", "units"], sums["shared", "ideal_units"]),
        "bound_us": sum(e.bound for e in estimates) * 1e6,
        "estimate_us": seconds * 1e6,
        "gpu_us": sum(measured) * 1e6 if None not in measured else None,
        "share_%": 100 * _ratio(seconds, step, 0.0),
        "limiter": max(by_limiter, key=by_limiter.get),
    }


def family_rows(profile) -> list[dict]:
    """One row per kernel family (conv2d_forward, ...), largest estimated time first."""
    groups = defaultdict(list)
    for r, e in zip(profile.launches, profile.estimates):
        groups[r.family].append((r, e))
    rows = [_group_row(f, [r for r, _ in g], [e for _, e in g], profile.step_seconds) for f, g in groups.items()]
    return sorted(rows, key=lambda row: -row["estimate_us"])


def launch_rows(profile) -> list[dict]:
    rows = []
    for r, e in zip(profile.launches, profile.estimates):
        row = _group_row(r.kernel, [r], [e], profile.step_seconds)
        rows.append({"#": r.index, **row})
    return rows


COLUMNS = [  # (key, header, width, format)
    ("kernel", "kernel", 30, "s"), ("launches", "n", 4, "d"), ("grid", "grid", 11, "s"),
    ("block", "block", 5, "s"), ("occupancy_%", "occ%", 8, "s"), ("gflop", "GFLOP", 8, ".2f"),
    ("mbytes", "MB", 8, ".1f"), ("coalescing_%", "coal%", 6, ".0f"), ("bank", "bank", 5, ".2f"),
    ("bound_us", "bound us", 9, ".1f"), ("estimate_us", "est us", 9, ".1f"), ("gpu_us", "gpu us", 9, ".1f"),
    ("share_%", "share", 6, ".1f"), ("limiter", "limit", 6, "s"),
]


def _table(rows: list[dict], measured: bool, leading=()) -> list[str]:
    columns = [c for c in COLUMNS if measured or c[0] != "gpu_us"]
    columns = [(key, key, 4, "d") for key in leading] + columns
    header = " ".join(f"{h:<{w}}" if f == "s" else f"{h:>{w}}" for _, h, w, f in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for key, _, width, fmt in columns:
            value = row[key]
            text = "n/a" if value is None else format(value, fmt)
            cells.append(f"{text:<{width}}" if fmt == "s" else f"{text:>{width}}")
        lines.append(" ".join(cells))
    return lines


def render_text(profile) -> str:
    measured = profile.measured_seconds is not None
    gpu = profile.gpu
    families = family_rows(profile)
    sampled = [r.counters for r in profile.launches if r.counters is not None]
    partial = sum(c.blocks_run < c.blocks_total for c in sampled)
    lines = [f"minicnn profile: {profile.arch}, batch {profile.batch}, one training step (forward, loss, "
             f"backward, {type_name(profile)}) in {profile.precision}, estimated for {gpu.name}",
             f"counters: emulator, first/middle/last blocks of each grid ({partial} of {len(sampled)} "
             f"launches sampled, totals scaled; unsampled blocks were not executed and left zeros)", "",
             "per kernel family"]
    lines += _table(families, measured)
    lines += ["", "per launch"]
    lines += _table(launch_rows(profile), measured, leading=("#",))
    lines += ["", *summary_lines(profile), "", *advice_lines(profile, families)]
    lines += [f"note: {n}" for n in profile.notes]
    return "\n".join(lines)


def type_name(profile) -> str:
    families = {r.family for r in profile.launches}  # adam_update, adam_update_advance_multi, ...
    return next((name for name in ("adam", "sgd") if any(f.startswith(f"{name}_update") for f in families)),
                "optimizer")


def summary_lines(profile) -> list[str]:
    step = profile.step_seconds
    bound = sum(e.bound for e in profile.estimates)
    lines = [f"launches per step:        {len(profile.launches)}",
             f"host time per step:       {profile.host_seconds * 1e3:.1f} ms (measured, {profile.device})",
             f"allocations per step:     {profile.allocations}   host-to-device copies: {profile.host_to_device}",
             f"roofline bound per step:  {bound * 1e3:.2f} ms",
             f"estimated step time:      {step * 1e3:.2f} ms on {profile.gpu.name} "
             f"({profile.batch / step:,.0f} img/s; {len(profile.launches) * LAUNCH_OVERHEAD * 1e3:.2f} ms "
             f"of it launch overhead)"]
    if profile.measured_seconds is not None:
        measured = profile.measured_seconds
        lines.append(f"measured GPU time:        {measured * 1e3:.2f} ms ({profile.batch / measured:,.0f} img/s; "
                     f"estimate / measured = {step / measured:.2f})")
    return lines


def advice_lines(profile, families: list[dict], top: int = 3) -> list[str]:
    """Which families to fix first, and the reason the model gives for each."""
    lines = ["what to fix first:"]
    for row in families[:top]:
        text = (f"{row['kernel']}: {row['share_%']:.0f}% of the step, limited by {WHY[row['limiter']]}"
                f"{detail(profile, row)}")
        lines += textwrap.wrap(text, width=110, initial_indent="  ", subsequent_indent="      ")
    return lines


def detail(profile, row) -> str:
    records = [r for r in profile.launches if r.family == row["kernel"]]
    facts = profile.facts.get(records[0].kernel)
    sums = _counter_sums(records)
    if row["limiter"] == "issue" and facts and facts.mix and facts.mix.loop_per_fp:
        loop = facts.mix.loop
        return (f" ({facts.mix.loop_per_fp:.1f} instructions per FP instruction in the main loop: "
                f"{loop.get('int/address', 0):.3g} integer/address and {loop.get('int div/rem', 0):.3g} integer "
                f"divisions beside {loop.get('fp32 (fma/mul/add)', 0):.3g} FMAs and "
                f"{loop.get('tensor (mma)', 0):.3g} mma per K step, counted in {facts.mix.kind.upper()}; "
                f"{ISSUE_PER_CLOCK} issue slots per SM per clock)")
    if row["limiter"] == "shared":
        per_request = _ratio(sums["shared", "units"], sums["shared", "requests"])
        return (f" ({per_request:.2f} wavefronts per shared request, bank ratio {row['bank']:.2f}; "
                f"{SHARED_WAVEFRONTS_PER_CLOCK} wavefront per SM per clock)")
    if row["limiter"] in ("l1", "dram"):
        return f" (coalescing {row['coalescing_%']:.0f}%)"
    return ""


def render_csv(profile) -> str:
    rows = launch_rows(profile)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["#"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def render_kernel(profile, name: str) -> str:
    """The launches of one kernel (family or full expression) and its access sites, worst first."""
    records = [r for r in profile.launches if name in (r.family, r.kernel)]
    if not records:
        names = sorted({r.family for r in profile.launches})
        raise ValueError(f"no kernel named {name!r} in this step; kernels: {', '.join(names)}")
    measured = profile.measured_seconds is not None
    indices = {r.index for r in records}
    rows = [row for row in launch_rows(profile) if row["#"] in indices]
    lines = [f"{name}: {len(records)} launches in one step of {profile.arch}, batch {profile.batch}", ""]
    lines += _table(rows, measured, leading=("#",))
    for kernel in sorted({r.kernel for r in records}):
        facts = profile.facts.get(kernel)
        if facts:
            lines += ["", f"{kernel}: {facts.registers} registers, {facts.static_shared} B static shared, "
                          f"spills {facts.spill_stores} B stored / {facts.spill_loads} B loaded"]
            if facts.mix:
                mix = ", ".join(f"{k} {v:.3g}" for k, v in sorted(facts.mix.loop.items(), key=lambda kv: -kv[1]))
                lines.append(f"main loop, per K step ({facts.mix.kind.upper()}, static): {mix}")
    lines += ["", "access sites (all launches, whole grids), worst first:", *site_lines(records)]
    return "\n".join(lines)


def site_lines(records) -> list[str]:
    sites = defaultdict(lambda: defaultdict(float))
    for r in records:
        if r.counters is None:
            continue
        for s in r.counters.sites:
            key = (s.where, s.space, s.op, s.width)
            for name in ("requests", "lanes", "units", "ideal_units"):
                sites[key][name] += getattr(s, name) * r.counters.scale
    header = f"{'where':<22} {'space':<6} {'op':<5} {'width':>5} {'requests':>12} {'lanes/req':>9} " \
             f"{'units/req':>9} {'ideal/req':>9} {'effic%':>6}"
    lines = [header, "-" * len(header)]
    ordered = sorted(sites.items(), key=lambda kv: (_ratio(kv[1]["ideal_units"], kv[1]["units"]), kv[0]))
    for (where, space, op, width), c in ordered:
        requests = c["requests"]
        lines.append(f"{where:<22} {space:<6} {op:<5} {width:>5} {requests:>12,.0f} "
                     f"{_ratio(c['lanes'], requests):>9.1f} {_ratio(c['units'], requests):>9.2f} "
                     f"{_ratio(c['ideal_units'], requests):>9.2f} {100 * _ratio(c['ideal_units'], c['units']):>6.0f}")
    lines.append("units: 32-byte sectors (global) or wavefronts (shared); ideal: perfectly coalesced / "
                 "conflict-free")
    return lines
