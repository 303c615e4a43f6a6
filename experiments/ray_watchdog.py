"""The watchdog of a local Ray started by a clv command: when that command dies without stopping its
Ray (SIGKILL, the OOM killer), it kills the processes the command had started, at once.

Why: Ray stops the gcs_server and the raylet with the driver (PR_SET_PDEATHSIG), but the raylet's
agents (ray::DashboardAgent, ray::RuntimeEnvAgent, about 200 MB together) first try to tell the dead
GCS that the raylet died and wait 60 s for it (Ray 2.60, `publish_error_to_driver`), so they outlive
a killed command by a minute. No Ray setting shortens that wait.

How: `experiments.ray_session` starts this file as a script (`python -I -S ray_watchdog.py PID`,
standard library only, its own session so a Ctrl-C or a kill of the command's process group does
not reach it) with a pipe on its stdin whose other end only the command holds. Twice a second it
notes the command's descendants that are Ray's (started after the watchdog, their command line
under a `/ray/` folder or named `ray::...`; pid and start time, from /proc). When the pipe reads
end-of-file (the command is gone, however it ended, or its Ray session closed) or its parent
changes, it SIGKILLs those of them still alive, and their own children, and exits. A session that
stopped its Ray leaves nothing to kill; the command's other children are never touched.
Linux only (/proc); elsewhere ray_session does not start it.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_SECONDS = 0.5


def _table() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time in clock ticks since boot, as text)."""
    out: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
        if len(fields) > 19 and fields[0] != "Z":  # a zombie is dead already
            out[int(name)] = (int(fields[1]), fields[19])
    return out


def _is_ray(pid: int) -> bool:
    """A process of Ray: its program or script under a `/ray/` folder (gcs_server, raylet, the
    dashboard, monitors, a worker before it renames itself) or a worker or agent named `ray::...`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read(4096)
    except OSError:
        return False
    return cmd.startswith(b"ray::") or b"/ray/" in cmd


def _descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> dict[int, str]:
    """The processes below `roots` in `table` (not the roots): pid -> start time."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = list(roots)
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in found:
                found[c] = table[c][1]
                stack.append(c)
    return found


def _kill_leftovers(seen: dict[int, str]) -> int:
    """SIGKILL the processes of `seen` still alive (same pid and start time: not a reused pid) and
    their children; returns how many were killed."""
    me = os.getpid()
    killed = 0
    for _ in range(5):  # a few passes: a child may be forked while its parent is being killed
        table = _table()
        alive = {pid for pid, start in seen.items() if pid != me and table.get(pid, (0, ""))[1] == start}
        alive |= set(_descendants(alive, table)) - {me}
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.1)
    return killed


def watch(driver: int) -> int:
    """Note `driver`'s Ray descendants until stdin reads end-of-file, then kill those left; returns 0."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the end of the pipe ends the watch, not the terminal's signals
    parent = os.getppid()
    table = _table()
    born = int(table.get(os.getpid(), (0, "0"))[1])
    seen: dict[int, str] = {}  # Ray's processes below the driver: pid -> start time
    looked: set[tuple[int, str]] = set()  # every (pid, start time) looked at once
    while True:
        for pid, start in _descendants({driver}, table).items():
            if (pid, start) not in looked:
                looked.add((pid, start))
                if int(start) >= born and _is_ray(pid):
                    seen[pid] = start
        ready, _, _ = select.select([0], [], [], POLL_SECONDS)
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                break
        if os.getppid() != parent:  # the driver is gone while something else holds the pipe open
            break
        table = _table()
    _kill_leftovers(seen)
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1])))
