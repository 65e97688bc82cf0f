"""The --num_workers supervisor, with fake worker processes and a fake clock."""

from __future__ import annotations

import signal

from server.workers import MAX_QUICK_RESTARTS, QUICK_EXIT_S, Supervisor, worker_args


class FakeProc:
    _pids = iter(range(1000, 100000))

    def __init__(self):
        self.pid = next(self._pids)
        self.returncode = None
        self.signals = []
        self.killed = False
        self.ignores_signals = False

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)
        if not self.ignores_signals:
            self.returncode = 0

    def wait(self, timeout=None):
        if self.returncode is None:
            import subprocess
            raise subprocess.TimeoutExpired("worker", timeout)
        return self.returncode

    def kill(self):
        self.killed = True
        self.returncode = -9


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(n=2):
    spawned = []

    def spawn(i):
        p = FakeProc()
        spawned.append((i, p))
        return p

    clock = Clock()
    sleeps = []
    sup = Supervisor(n, spawn, grace_s=1.0, clock=clock, sleep=sleeps.append)
    return sup, spawned, clock, sleeps


def test_worker_args_drop_num_workers_in_both_spellings():
    assert worker_args(["--port=1", "--num_workers=2", "--x"]) == ["--port=1", "--x"]
    assert worker_args(["--num_workers", "3", "--port=1"]) == ["--port=1"]
    assert worker_args(["-num_workers=2"]) == []


def test_start_spawns_every_worker_and_step_restarts_one_that_died():
    sup, spawned, clock, sleeps = make(2)
    sup.start()
    assert [i for i, _ in spawned] == [0, 1]
    clock.t = QUICK_EXIT_S + 1  # a worker that ran a while before dying: restarted at once
    spawned[1][1].returncode = -9
    sup.step()
    assert [i for i, _ in spawned] == [0, 1, 1] and sleeps == [0.0]
    assert sup.procs[1] is spawned[2][1] and sup.procs[0] is spawned[0][1]
    sup.step()  # nothing else to do
    assert len(spawned) == 3


def test_a_worker_that_keeps_dying_quickly_stops_the_supervisor():
    sup, spawned, clock, sleeps = make(1)
    sup.start()
    for n in range(MAX_QUICK_RESTARTS):
        sup.procs[0].returncode = 1
        sup.step()
        assert not sup.failed
    assert len(spawned) == 1 + MAX_QUICK_RESTARTS and sleeps == [1.0] * MAX_QUICK_RESTARTS
    sup.procs[0].returncode = 1
    sup.step()
    assert sup.failed and sup.stopping and len(spawned) == 1 + MAX_QUICK_RESTARTS


def test_stop_forwards_the_signal_and_kills_a_worker_that_does_not_exit():
    sup, spawned, clock, _ = make(2)
    sup.start()
    stubborn = spawned[1][1]
    stubborn.ignores_signals = True
    sup.stop(signal.SIGINT)
    assert spawned[0][1].signals == [signal.SIGINT] and spawned[0][1].returncode == 0
    assert stubborn.signals == [signal.SIGINT] and stubborn.killed
    sup.step()  # stopping: nothing is restarted
    assert len(spawned) == 2
