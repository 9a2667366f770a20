"""One writer per run folder: ``RunLock``, an exclusive advisory lock on ``<run>/.lock``.

The run takes it when it starts or resumes and holds it to the end; a second writer is refused at once
(``RunFolderInUse``, naming the holder's PID, host and start time). The operating system drops the lock
when its process dies, even by SIGKILL, so a run killed mid-way resumes without any clean-up.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:                   # Windows: no flock; a run folder is not locked there
    fcntl = None


class RunFolderInUse(OSError):
    """Another process holds the run folder's lock (it is training or resuming that run)."""


class RunLock:
    """An exclusive advisory lock on a run folder, held by the one process that writes it.

    ``acquire`` takes ``flock(LOCK_EX | LOCK_NB)`` on ``<run>/.lock`` and writes the holder's PID, host and
    start time into it; if another process holds it, ``RunFolderInUse`` says who. The lock belongs to the
    open file, so the kernel releases it when the holder exits or is killed: a ``.lock`` left by a dead
    process blocks nothing, and its stale contents are overwritten by the next holder. The file itself is
    never deleted (deleting it would let two processes lock two different files of the same name)."""

    NAME = ".lock"

    def __init__(self):
        self.fd: int | None = None
        self.path: Path | None = None

    def acquire(self, run: str | Path) -> "RunLock":
        """Take the lock of the existing folder ``run``, or raise ``RunFolderInUse`` naming its holder."""
        if self.fd is not None or fcntl is None:
            return self
        path = Path(run) / self.NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)     # no O_TRUNC: the holder's record stays readable
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:                            # held by another open file: another writer
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderInUse(f"run folder {str(run)!r} is in use by {holder}; wait for it or stop it") from e
        except OSError as e:                                    # a file system without flock (some network ones)
            os.close(fd)
            warnings.warn(f"run folder {str(run)!r} cannot be locked ({e.strerror or e}); make sure no other "
                          "process writes it", stacklevel=2)
            return self
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd, self.path = fd, path
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The lock holder as a phrase: "process 123 on host (started …)"; a vaguer one if it has not written yet."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode())
        where = "" if record["host"] == socket.gethostname() else f" on {record['host']}"
        return f"process {record['pid']}{where} (started {record['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
