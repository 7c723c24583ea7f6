#!/usr/bin/python3
"""M/M/c in SimPy 2 (Debian's python3-simpy 2.3.1, the SimPy.Simulation API).

The same model as sim/bench_test.go BenchmarkMMc: Poisson arrivals at
rho*c per second, exponential service of mean 1 s, c servers, FIFO; N jobs.
Prints jobs/s and the mean wait (Erlang C for c=4, rho=0.9: 1.9694 s).

    /usr/bin/python3 bench/simpy/mmc.py [JOBS] [C] [RHO]
"""
import random
import sys
import time

from SimPy.Simulation import Process, Resource, Simulation, hold, release, request


class Tally:
    waited = 0.0
    done = 0


class Job(Process):
    def run(self, servers, tally):
        arrived = self.sim.now()
        yield request, self, servers
        tally.waited += self.sim.now() - arrived
        yield hold, self, random.expovariate(1.0)
        yield release, self, servers
        tally.done += 1


class Source(Process):
    def generate(self, n, rate, servers, tally):
        for _ in range(n):
            job = Job(sim=self.sim)
            self.sim.activate(job, job.run(servers, tally))
            yield hold, self, random.expovariate(rate)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rho = float(sys.argv[3]) if len(sys.argv) > 3 else 0.9
    random.seed(1)
    sim = Simulation()
    sim.initialize()
    servers = Resource(capacity=c, sim=sim)
    tally = Tally()
    src = Source(sim=sim)
    sim.activate(src, src.generate(n, rho * c, servers, tally))
    start = time.perf_counter()
    sim.simulate(until=1e18)
    wall = time.perf_counter() - start
    print(f"simpy: {tally.done} jobs in {wall:.2f}s: {tally.done / wall:.0f} jobs/s; "
          f"mean wait {tally.waited / tally.done:.6f}s")


if __name__ == "__main__":
    main()
