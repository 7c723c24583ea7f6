#!/usr/bin/env python3
"""bench/eta-live.sh's load: Poisson Submits to a Sluice server at RATE a second for SECONDS,
each from one of the keys live-1 … live-6 (live-1 and live-2, the pro tenants, take half),
asking the synthetic executors for a lognormal run time of 400 ms ± 150 ms (duration_ms), as
live.yaml simulates. Seeded: the same arrivals and run times every run.

    load.py ADDR RATE SECONDS
"""
import json
import math
import random
import sys
import time
import urllib.request


def main():
    addr, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(1)
    mean, sd = 0.4, 0.15
    s2 = math.log(1 + (sd / mean) ** 2)
    mu = math.log(mean) - s2 / 2
    t0 = time.time()
    nxt, sent, failed = t0, 0, 0
    while nxt - t0 < secs:
        nxt += rng.expovariate(rate)
        if (d := nxt - time.time()) > 0:
            time.sleep(d)
        key = rng.choice([1, 1, 2, 2, 3, 4, 5, 6])
        ms = int(1000 * math.exp(mu + math.sqrt(s2) * rng.gauss(0, 1)))
        body = json.dumps({"spec": {"model": "sdxl", "input": {"duration_ms": ms}}}).encode()
        req = urllib.request.Request(addr + "/sluice.v1.JobService/Submit", body,
                                     {"Content-Type": "application/json", "Authorization": "Bearer live-%d" % key})
        try:
            urllib.request.urlopen(req, timeout=5).read()
            sent += 1
        except Exception as e:  # counted and shown; the run goes on
            failed += 1
            if failed <= 3:
                print("submit failed:", e, file=sys.stderr)
    print("submitted %d jobs (%d failed) in %.0f s" % (sent, failed, time.time() - t0))


if __name__ == "__main__":
    main()
