#!/usr/bin/env python3
"""bench/eta-live.sh's simulated load: live.yaml with RATE jobs a second (a quarter to each pro
tenant, an eighth to each free one, as load.py draws them) for SECONDS, on stdout.

    workload.py live.yaml RATE SECONDS
"""
import re
import sys


def main():
    path, rate, secs = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    for line in open(path):
        line = re.sub(r"^duration: .*", "duration: %ss" % secs, line)
        line = re.sub(r"(tier: pro, model: sdxl, arrivals: \{rate: )[0-9.]+", r"\g<1>%g" % (rate / 4), line)
        line = re.sub(r"(tier: free, model: sdxl, arrivals: \{rate: )[0-9.]+", r"\g<1>%g" % (rate / 8), line)
        sys.stdout.write(line)


if __name__ == "__main__":
    main()
