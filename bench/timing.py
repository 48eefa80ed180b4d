"""The benches' one timing loop: variants stepped in turn, so that a burst
of load on the shared machine hits all of them alike (bench/goals.py then
reads the median of the per-round ratios)."""

import time


def in_turn(steps, rounds, warmup):
    """`{name: [seconds per call]}`: each of `steps` (name: callable, which
    returns once its work is done) called `warmup` times untimed, then once
    per round, in turn, for `rounds` rounds."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times
