"""Atomic output writes (temp file in the same folder + rename): a failed run leaves no half files,
and the temp files a killed run left behind are removed by the next write into their folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    mask = os.umask(0o077)  # reading the umask means setting it (to a safe value): put it straight back
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import, before any worker threads exist


def _umask() -> int:
    return _UMASK


# A temp file is named .NAME.HOST-PID.RANDOM.tmp: the host (a short hash of its name, for folders
# shared by Ray nodes) and the process that writes it, so that a later process can tell a killed
# writer's leftovers from a live writer's file. SB3 may append .zip to it (policies/rl.py).
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?:\.zip)?$")
_ANONYMOUS = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?:\.zip)?$")  # before the owner was named
# a temp file whose owner cannot be checked (another host, or an older clv-engine that did not name
# it) is left alone until it has not changed for this long: a live writer touches it all the time
STALE_SECONDS = 3600.0
SWEEP_EVERY = 60.0  # a folder is swept at most this often by one process (cells/ takes thousands of writes)
_swept: dict[str, float] = {}  # folder -> when this process last swept it
_lock = threading.Lock()


def temp_prefix(name: str) -> str:
    """The start of this process's temp names for the output `name` (mkstemp adds RANDOM.tmp)."""
    return f".{name}.{HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    try:  # a killed process its parent has not reaped yet (a zombie) writes nothing more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether `path` is an atomic write's temp file whose writer is gone: a process of this host
    that no longer runs, or (owner unknown) untouched for STALE_SECONDS."""
    m = _OWNED.match(path.name)
    if m is not None and m["host"] == HOST:
        return not _alive(int(m["pid"]))
    if m is None and _ANONYMOUS.match(path.name) is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS


def clean_stale_temp(folder: str | Path) -> list[str]:
    """Remove the temp files (and temp folders, e.g. a history generated into .history.HOST-PID...)
    that killed writers left in `folder`; returns their names. Files of live writers, of other
    hosts (until stale) and anything not named like a temp file are left alone."""
    folder = Path(folder)
    removed: list[str] = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and ".tmp" in e.name]
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        p = Path(e.path)
        if not is_stale_temp(p, now):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(e.name)
        except FileNotFoundError:  # another process cleaned it first
            pass
        except OSError:
            pass
    return removed


def _sweep(folder: Path) -> None:
    key, now = str(folder.resolve()), time.monotonic()
    with _lock:
        if now - _swept.get(key, -SWEEP_EVERY) < SWEEP_EVERY:
            return
        _swept[key] = now
    clean_stale_temp(folder)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`. A write into a
    folder (at most once a minute per folder and process) removes the temp files killed writers
    left there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes it 0600; a written file gets what the umask gives any new file
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an existing folder
    there is removed first, so a kill in between leaves no folder rather than a half one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path.parent)
    tmp_path = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_umask())  # mkdtemp makes it 0700
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_write_parquet(path: str | Path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
