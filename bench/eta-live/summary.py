#!/usr/bin/env python3
"""bench/eta-live.sh's table: the leader's ETA honesty from its /metrics text
(sluice_eta_starts_total, sluice_eta_error_ratio) beside the simulator's on the same workload
(sluice sim run -o json).

    summary.py METRICS_FILE SIM_JSON
"""
import json
import re
import sys

LINE = re.compile(r'^(sluice_\w+)\{([^}]*)\} (\S+)$')


def labels(s):
    return dict(re.findall(r'(\w+)="([^"]*)"', s))


def bucket_range(buckets, p):
    """The error bucket holding the p-quantile: (lower, upper) bounds."""
    total = buckets[-1][1]
    rank, lower = p * total, 0.0
    for le, count in buckets:
        if count >= rank:
            return lower, le
        lower = le
    return lower, float("inf")


def pct(x):
    return "%g %%" % round(100 * x, 1)


def main():
    starts, errs, waits = {}, {}, {}
    for line in open(sys.argv[1]):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, lab, v = m.group(1), labels(m.group(2)), float(m.group(3))
        if name == "sluice_eta_starts_total":
            starts.setdefault(lab["tier"], {})[lab["band"]] = v
        elif name == "sluice_eta_error_ratio_bucket":
            errs.setdefault(lab["tier"], []).append((float(lab["le"]), v))
        elif name in ("sluice_job_wait_seconds_sum", "sluice_job_wait_seconds_count"):
            waits.setdefault(lab["tier"], {})[name.rsplit("_", 1)[1]] = v
    sim = json.load(open(sys.argv[2]))
    sim_tiers = {t["name"]: t for t in sim["tiers"]}
    print("| tier | followed starts | told to wait: inside / early / late | told at once: started within 1 s | error p50 | error p90 | mean wait | simulated: inside / early / late, error p50 / p90, mean wait |")
    print("|---|---|---|---|---|---|---|---|")
    for tier in sorted(starts):
        b = starts[tier]
        waited = b.get("inside", 0) + b.get("early", 0) + b.get("late", 0)
        once = b.get("at_once", 0) + b.get("at_once_late", 0)
        h = sorted(errs.get(tier, []))
        p50, p90 = bucket_range(h, 0.5), bucket_range(h, 0.9)
        s = sim_tiers.get(tier, {})
        w = waits.get(tier, {})
        mean = w.get("sum", 0) / w["count"] if w.get("count") else 0
        print("| %s | %d | %s / %s / %s | %s | %g–%g %% | %g–%g %% | %.2f s | %s / %s / %s, %s / %s, %.2f s |" % (
            tier, waited + once,
            pct(b.get("inside", 0) / waited) if waited else "-",
            pct(b.get("early", 0) / waited) if waited else "-",
            pct(b.get("late", 0) / waited) if waited else "-",
            pct(b.get("at_once", 0) / once) if once else "-",
            100 * p50[0], 100 * p50[1], 100 * p90[0], 100 * p90[1], mean,
            pct(s["eta"].get("in_band", 0)), pct(s["eta"].get("early", 0)), pct(s["eta"].get("late", 0)),
            pct(s["eta"].get("error_p50", 0)), pct(s["eta"].get("error_p90", 0)),
            s["wait"]["mean"]))


if __name__ == "__main__":
    main()
