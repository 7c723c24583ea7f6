#!/bin/sh
# The simulator against SimPy on the same M/M/c model (c = 4, ρ = 0.9),
# side by side in one run: each side three times, interleaved, and the
# medians of their jobs/s and the ratio.
#   bench/simpy/run.sh [JOBS]      JOBS: 1000000 (default) or 100000
# The Go side runs with GOGC=400, as `sluice sim` does, unless GOGC is set.
set -eu
jobs=${1:-1000000}
cd "$(dirname "$0")/../.."

# SimPy 2 as Debian ships it (python3-simpy 2.3.1), for the system Python.
if ! /usr/bin/python3 -c 'import SimPy.Simulation' 2>/dev/null; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get install -y python3-simpy >/dev/null
fi
echo "SimPy $(/usr/bin/python3 -c 'import SimPy; print(SimPy.__version__)'), $(/usr/bin/python3 --version), $(go version), GOGC=${GOGC:-400}"

case $jobs in
1000000 | 100000) ;;
*) echo "JOBS must be 100000 or 1000000 (the sizes BenchmarkMMc runs)" >&2; exit 2 ;;
esac
bin=$(mktemp -d)/sim.test
go test -c -o "$bin" ./sim/
median() { sort -n | sed -n 2p; }
go_rates="" py_rates=""
for i in 1 2 3; do
	g=$(GOGC=${GOGC:-400} "$bin" -test.run '^$' -test.bench "BenchmarkMMc/c=4/rho=0.9/jobs=$jobs\$" -test.benchtime 1x | grep '^BenchmarkMMc')
	echo "$g"
	go_rates="$go_rates $(echo "$g" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "jobs/s") print $i}')"
	p=$(/usr/bin/python3 bench/simpy/mmc.py "$jobs")
	echo "$p"
	py_rates="$py_rates $(echo "$p" | sed -n 's/.*: \([0-9]*\) jobs\/s.*/\1/p')"
done
g=$(printf '%s\n' $go_rates | median)
p=$(printf '%s\n' $py_rates | median)
awk -v g="$g" -v p="$p" -v n="$jobs" 'BEGIN { printf "median of 3: sluice sim %.0f jobs/s (%d jobs in %.1fs), simpy %.0f jobs/s: %.2f× SimPy\n", g, n, n / g, p, g / p }'
