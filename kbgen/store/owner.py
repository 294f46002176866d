"""Which process owns a run, and whether that process is still alive.

A run row records the pid and host name of the process that started it. A ``running`` row whose
process is gone (SIGKILL, out-of-memory killer, power cut) never reached ``finish_run``; this
module tells such rows apart from live ones. Only processes on this host can be checked: a row
from another host is left alone.

Caveat: containers that share a host name (``--network host``) but not a PID namespace look
like one host; a run in one of them would wrongly look dead from the other.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from types import ModuleType

# A process created this long after its run started cannot be the run's owner (the owner starts
# before it writes the row): the pid was reused. The slack covers clock granularity and skew.
_PID_REUSE_SLACK_S = 2.0
# Roughly when this process started (this module is imported before any run is started). A row
# with our own pid that started before it belongs to an earlier process that had the same pid,
# as happens to kbgen running as PID 1 of a container restarted under the same host name.
_THIS_PROCESS_SEEN_AT = time.time()


def this_host() -> str:
    """The host name stored on runs started by this process."""
    return socket.gethostname()


def owner_is_gone(pid: int, started_at: datetime) -> bool:
    """Whether process ``pid`` on this host, which started a run at ``started_at`` (naive UTC), is gone.

    With psutil installed, a pid that now belongs to a process created after the run started
    (pid reuse) or to a zombie counts as gone. Without psutil (kbgen does not depend on it) only
    the pid's liveness is checked: a reused pid makes a dead run look alive, which errs on the
    safe side (it stays ``running``; nothing is marked wrongly).
    """
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return True
    started = started_at.replace(tzinfo=UTC).timestamp()
    if pid == os.getpid():
        return started < _THIS_PROCESS_SEEN_AT - _PID_REUSE_SLACK_S
    try:
        import psutil
    except ImportError:
        return not _pid_alive(pid)
    return _psutil_owner_is_gone(psutil, pid, started)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        # os.kill on Windows terminates the process whatever the signal: never probe there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _psutil_owner_is_gone(psutil: ModuleType, pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return True
        created = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    return created > started + _PID_REUSE_SLACK_S
