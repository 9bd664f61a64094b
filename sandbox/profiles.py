"""The fixed layout of every agent container: where things are inside it.

The agent images (``images/``) create uid 1000's home at ``/home/agent`` and the empty
``/workspace``; the spec puts a size-capped tmpfs on ``/tmp`` and on the home (owned by the
container's uid, else the CLIs cannot write their state: container-spike.md §2) and the task's
folder on ``/workspace``.
"""

from __future__ import annotations

from typing import Final

WORKDIR: Final = "/workspace"
HOME: Final = "/home/agent"
TMP: Final = "/tmp"
TMP_MODE: Final = "1777"
HOME_MODE: Final = "0700"
# Nothing may be mounted at or inside these: the kernel's and Docker's own.
RESERVED_TARGETS: Final = ("/proc", "/sys", "/dev")
# Nothing may be mounted at these or at a folder containing them: the container's own places.
OWN_TARGETS: Final = ("/", HOME, TMP, WORKDIR)
# Every container's plain environment before the agent's own.
BASE_ENV: Final = {"HOME": HOME, "LANG": "C.UTF-8", "TERM": "dumb", "TMPDIR": TMP}
