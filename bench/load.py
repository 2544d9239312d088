"""The load runner: simulated browsers in several processes, server CPU from /proc.

Each scenario runs ``processes`` forked generator processes with ``threads`` browsers each, so the
generator is not held back by one interpreter's GIL. Every browser prepares its own state first
(a signed-in session, a refresh-token chain, ...); only then does the parent note the server's CPU
time and let them go. A shared ticket counter stops the run after ``total`` operations.

Closed loop (``rate=None``): each browser starts its next operation when the last one ended; this
finds saturation. Open loop (``rate`` per second over all browsers): each browser starts its
operations on a fixed schedule and latency counts from the scheduled start, so a slow server
shows as latency instead of as fewer requests (no coordinated omission).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: ``prepare(browser_index) -> state`` runs in the generator process; ``operation(state)`` is one
#: measured flow or request and raises on any unexpected answer.
Prepare = Callable[[int], Any]
Operation = Callable[[Any], object]  # what it returns is not used


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime of every live process in the group, plus the leader's reaped children."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:  # field 5: pgrp
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry) == pgid:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (exited workers)
    return ticks / CLK_TCK


def resident_memory(pgid: int) -> dict[str, list[float]]:
    """Resident set size in MiB of the server's master and of each of its workers."""
    sizes: dict[str, list[float]] = {"master": [], "workers": []}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        rss = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), "0"
        )
        mib = int(rss) / 1024
        sizes["master" if int(entry) == pgid else "workers"].append(mib)
    return sizes


@dataclass
class Measurement:
    name: str
    browsers: int
    completed: int = 0
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    offered_rate: float | None = None

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def rate(self) -> float:
        return self.completed / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.completed / self.cpu if self.cpu > 0 else float("nan")


def _generator(
    prepare: Prepare,
    operation: Operation,
    first_browser: int,
    threads: int,
    all_browsers: int,
    total: int,
    rate: float | None,
    tickets: Any,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    lock = threading.Lock()
    completed = errors = 0
    latencies: list[float] = []
    samples: list[str] = []
    states: list[Any] = []
    try:
        states = [prepare(first_browser + i) for i in range(threads)]
    except Exception:
        samples.append("prepare failed: " + traceback.format_exc(limit=3)[-600:])
    ready.wait()
    go.wait()
    started_at = go_time = time.perf_counter()

    def next_ticket() -> bool:
        with tickets.get_lock():
            if tickets.value >= total:
                return False
            tickets.value += 1
            return True

    def browse(index: int, state: Any) -> None:
        nonlocal completed, errors
        interval = all_browsers / rate if rate else 0.0
        scheduled = go_time + interval * (first_browser + index) / all_browsers
        while next_ticket():
            if rate:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                began = scheduled
                scheduled += interval
            else:
                began = time.perf_counter()
            try:
                operation(state)
            except Exception as error:
                with lock:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(f"{type(error).__name__}: {error}"[:400])
                continue
            elapsed = time.perf_counter() - began
            with lock:
                completed += 1
                latencies.append(elapsed)

    workers = [threading.Thread(target=browse, args=(i, s)) for i, s in enumerate(states)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((completed, errors, latencies, samples, started_at, time.perf_counter()))


def run(
    name: str,
    *,
    prepare: Prepare,
    operation: Operation,
    total: int,
    processes: int,
    threads: int,
    pgid: int,
    rate: float | None = None,
) -> Measurement:
    """``total`` operations by ``processes`` x ``threads`` browsers; CPU of group ``pgid``."""
    context = multiprocessing.get_context("fork")  # the closures travel with the fork
    tickets = context.Value("l", 0)
    ready = context.Barrier(processes + 1)
    go = context.Event()
    results = context.Queue()
    children = [
        context.Process(
            target=_generator,
            args=(
                prepare,
                operation,
                p * threads,
                threads,
                processes * threads,
                total,
                rate,
                tickets,
                ready,
                go,
                results,
            ),
            daemon=True,
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    ready.wait()
    cpu_before = group_cpu_seconds(pgid)
    go.set()
    measurement = Measurement(name, processes * threads, offered_rate=rate)
    starts, ends = [], []
    for _ in children:
        completed, errors, latencies, samples, started, ended = results.get(timeout=3600)
        measurement.completed += completed
        measurement.errors += errors
        measurement.latencies.extend(latencies)
        measurement.samples.extend(samples[: max(0, 3 - len(measurement.samples))])
        starts.append(started)
        ends.append(ended)
    measurement.cpu = group_cpu_seconds(pgid) - cpu_before
    measurement.wall = max(ends) - min(starts)
    for child in children:
        child.join(timeout=30)
    return measurement
