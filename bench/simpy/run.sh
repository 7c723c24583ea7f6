#!/bin/sh
# The simulator against SimPy on the same M/M/c model (c = 4, ρ = 0.9),
# side by side in one run: jobs/s of each and their ratio.
#   bench/simpy/run.sh [JOBS]      (default 1000000; run from the repository root)
set -eu
jobs=${1:-1000000}
cd "$(dirname "$0")/../.."

# SimPy 2 as Debian ships it (python3-simpy 2.3.1), for the system Python.
if ! /usr/bin/python3 -c 'import SimPy.Simulation' 2>/dev/null; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get install -y python3-simpy >/dev/null
fi
/usr/bin/python3 -c 'import SimPy; print("SimPy", SimPy.__version__)' 2>/dev/null || true
go version

case $jobs in
1000000) bench='BenchmarkMMc/c=4/rho=0.9/jobs=1000000$' ;;
100000) bench='BenchmarkMMc/c=4/rho=0.9/jobs=100000$' ;;
*) echo "JOBS must be 100000 or 1000000 (the sizes BenchmarkMMc runs)" >&2; exit 2 ;;
esac
go_out=$(go test -run '^$' -bench "$bench" -benchtime 1x ./sim/ | grep '^BenchmarkMMc')
echo "$go_out"
py_out=$(/usr/bin/python3 bench/simpy/mmc.py "$jobs")
echo "$py_out"

go_rate=$(echo "$go_out" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "jobs/s") print $i}')
py_rate=$(echo "$py_out" | sed -n 's/.*: \([0-9]*\) jobs\/s.*/\1/p')
awk -v g="$go_rate" -v p="$py_rate" 'BEGIN { printf "sluice sim %.0f jobs/s, simpy %.0f jobs/s: %.2f× SimPy\n", g, p, g / p }'
