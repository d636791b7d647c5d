"""The table, the targets and their check."""

from __future__ import annotations


def fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_mem(m):
    if not m:
        return ""
    if "error" in m:
        return "err"
    s = f"{m['rss_growth_mib']:.0f}"
    s = f"{m['rss_growth_mib']:.1f}" if m["rss_growth_mib"] < 10 else s
    if m.get("gpu_mib") is not None:
        s += f" / {m['gpu_mib']:.0f}"
    return s


HEADER = (f"{'cfg':<3} {'dtype':<7} {'contender':<22} {'median samples/s':>17} "
          f"{'min - max':>23} {'ref/X':>6}  {'peak MiB'}")


def table_rows(block, reference):
    rows = []
    for name, r in block["contenders"].items():
        ratio = "ref" if name == reference else (f"{r['ratio']:.2f}" if "ratio" in r else "n/a")
        mark = " *" if r.get("note") else ""
        rows.append(f"{block['config']:<3} {block['dtype']:<7} {name + mark:<22} "
                    f"{fmt_rate(r['median']):>17} "
                    f"{fmt_rate(r['min']) + ' - ' + fmt_rate(r['max']):>23} {ratio:>6}  "
                    f"{fmt_mem(r.get('memory'))}")
    for name, why in block["skipped"].items():
        rows.append(f"{block['config']:<3} {block['dtype']:<7} {name:<22} skipped: {why}")
    return rows


# Targets from the issue: (section, versus, {config: minimum ratio}), float32, reference
# backend numpy (CPU) or cupy (GPU). ratio = portable_bp samples/s / X samples/s.
TARGETS = [
    ("cpu", "numpy (hand-written)", {"A": 0.5, "B": 0.75, "C": 0.9, "D": 0.95}),
    ("cpu", "torch eager", {"A": 5, "B": 2, "C": 1.15, "D": 0.95}),
    ("cpu", "scikit-learn", {"A": 1.5, "B": 1.5, "C": 1.3, "D": 1.1}),
    ("cpu", "matmul bound", {"C": 0.75, "D": 0.9}),
    ("gpu", "torch eager cuda", {"B": 1.0, "C": 1.0, "D": 1.0, "E": 1.0}),
    ("gpu", "matmul bound", {"E": 0.85}),
]


# peak memory: portable_bp's / the peer's, at most this (CPU: RSS growth; GPU: peak in use)
MEMORY_TARGETS = [
    ("cpu", "torch eager", "rss_growth_mib", {"A": 1.0, "B": 1.0, "C": 1.0, "D": 1.0}),
    ("gpu", "torch eager cuda", "gpu_mib", {"B": 1.1, "C": 1.1, "D": 1.1, "E": 1.1}),
]


# Targets between any two contenders: (section, mine, versus, {config: minimum}), float32,
# ratio = median over rounds of versus seconds / mine seconds (mine's samples/s / versus's).
PAIR_TARGETS = [
    ("cpu", "portable_bp[jax]", "jax scan epoch", {"A": 0.9, "B": 0.9, "C": 0.9}),
    ("cpu", "portable_bp[numpy]", "numpy (tight)", {"A": 0.7, "C": 0.95}),
    ("gpu", "portable_bp[cupy]", "torch cuda graph", {"B": 1.0, "C": 1.0, "D": 1.0}),
    ("gpu", "portable_bp[torch:cuda]", "torch cuda graph", {"B": 1.0, "C": 1.0, "D": 1.0}),
    ("gpu", "portable_bp[jax:gpu]", "jax scan epoch gpu", {"B": 0.9, "C": 0.9, "D": 0.9}),
]


def pair_ratio(block, mine, versus):
    """Median over rounds of versus seconds / mine seconds, or None if either is missing."""
    a = block["contenders"].get(mine, {}).get("seconds")
    b = block["contenders"].get(versus, {}).get("seconds")
    if not a or not b:
        return None
    ratios = sorted(y / x for x, y in zip(a, b))
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def check_pair_targets(device, blocks):
    out = []
    for dev, mine, versus, wanted in PAIR_TARGETS:
        for cfg, minimum in wanted.items():
            block = next((b for b in blocks if b["config"] == cfg and b["dtype"] == "float32"), None)
            if dev != device or block is None:
                continue
            ratio = pair_ratio(block, mine, versus)
            out.append({"versus": f"{versus} ({mine})", "config": cfg, "minimum": minimum, "ratio": ratio,
                        "status": "n/a" if ratio is None else ("PASS" if ratio >= minimum else "MISS")})
    return out


def check_targets(device, blocks, reference=None):
    out = check_pair_targets(device, blocks)
    for dev, versus, key, wanted in MEMORY_TARGETS:
        if dev != device or reference is None:
            continue
        for cfg, maximum in wanted.items():
            block = next((b for b in blocks if b["config"] == cfg and b["dtype"] == "float32"), None)
            if block is None:
                continue
            mine = (block["contenders"].get(reference, {}).get("memory") or {}).get(key)
            theirs = (block["contenders"].get(versus, {}).get("memory") or {}).get(key)
            if mine is None or theirs is None:
                continue  # memory pass off, or an error (shown in the table)
            ratio = mine / theirs if theirs > 0 else None
            status = "n/a" if ratio is None else ("PASS" if ratio <= maximum else "MISS")
            out.append({"versus": f"{versus} (peak memory)", "config": cfg, "maximum": maximum,
                        "ratio": ratio, "status": status})
    for dev, versus, wanted in TARGETS:
        if dev != device:
            continue
        for cfg, minimum in wanted.items():
            block = next((b for b in blocks if b["config"] == cfg and b["dtype"] == "float32"), None)
            if block is None:
                continue
            row = (block or {}).get("contenders", {}).get(versus, {})
            ratio = row.get("ratio")
            status = "n/a" if ratio is None else ("PASS" if ratio >= minimum else "MISS")
            out.append({"versus": versus, "config": cfg, "minimum": minimum,
                        "ratio": ratio, "status": status})
    return out
