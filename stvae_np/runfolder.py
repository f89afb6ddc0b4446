"""What keeps a run folder safe: atomic, fsynced writes; a lock file per folder; stale
temporary files of dead processes cleaned away.

    atomic_write(path, data)         bytes, str or a writer -> temp file beside it, fsync, rename, fsync folder
    write_json(path, obj)            atomic_write of JSON
    RunLock(folder)                  with RunLock(folder): ... (one process per run folder)
    clean_stale_temps(folder)        remove ``*.tmp-<pid>`` left by processes that are gone

A temporary file is named ``<target>.tmp-<pid>``: the process that writes it is in its
name, so a later run can tell a write in flight (its process alive) from a leftover.
"""
from __future__ import annotations

import contextlib
import json
import os
import re

LOCK = ".lock"
_TEMP = re.compile(r"\.tmp-(\d+)$")


class FolderBusy(Exception):
    """The folder's lock is held by a living process."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as alive; ours always is)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, someone else's
        return True
    except OSError:
        return False
    return True


def fsync_dir(folder) -> None:
    """fsync a folder, so a rename in it survives a power cut (a no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(folder) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path) -> str:
    return f"{os.fspath(path)}.tmp-{os.getpid()}"


def atomic_write(path, data) -> None:
    """Write ``data`` (bytes, str, or a function ``data(fh)`` writing to a binary file) to
    ``path`` all at once: a temporary file beside it, flushed and fsynced, renamed over
    ``path``, the folder fsynced. A failure (disk full) leaves ``path`` as it was and no
    temporary file."""
    path = os.fspath(path)
    tmp = temp_name(path)                    # in the target's folder: the rename is atomic
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(os.path.dirname(path))


def write_json(path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def clean_stale_temps(folder) -> list:
    """Remove the ``*.tmp-<pid>`` files in ``folder`` whose process is gone; returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.search(name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


class RunLock:
    """``folder/.lock`` holding this process's PID, created exclusively, removed on release.
    A lock of a living process raises :class:`FolderBusy`; one whose process is gone is
    taken over (``taken_over``: the dead PID)."""

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), LOCK)
        self.taken_over = None
        self.held = False

    def acquire(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.path) as fh:
                        pid = int(fh.read().strip())
                except (OSError, ValueError):
                    pid = -1                    # empty or unreadable: a crash while locking
                if pid != -1 and pid_alive(pid) and pid != os.getpid():
                    raise FolderBusy(f"{os.path.dirname(self.path)} is in use by process {pid} "
                                     f"(lock file {self.path})") from None
                if pid == os.getpid():
                    raise FolderBusy(f"{os.path.dirname(self.path)} is already in use by this process "
                                     f"(lock file {self.path})") from None
                self.taken_over = pid
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")          # (no fsync: a lock need not outlive a crash)
            self.held = True
            return self
        raise FolderBusy(f"could not take the lock {self.path}")

    def release(self):
        if self.held:
            self.held = False
            with contextlib.suppress(OSError):
                os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
