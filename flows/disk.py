"""A full disk, said in one sentence: which file system, how much is left, what was being written."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from flows.errors import PlatformError, chain

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from, is a file system out of space (or quota)."""
    return any(isinstance(one, OSError) and one.errno in _FULL for one in chain(exc))


def full_disk_error(path: Path, doing: str) -> PlatformError:
    """The error for a disk that filled up while `doing` something under `path` (never retried)."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return PlatformError(f"no space left on the disk holding {path} ({usage.free // 2**20} MiB free of "
                         f"{usage.total // 2**20} MiB) while {doing}; free space there (old images: `docker image "
                         "prune`; old work folders) or point TMPDIR at a larger disk, then deliver again")
