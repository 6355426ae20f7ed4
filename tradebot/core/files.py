"""Atomic file writes: a file is either its old self or its new self, never half-written.

Every writer goes through ``atomic_writer``: a temp file in the same folder (so ``os.replace`` is
a rename on one file system), flushed and fsynced, then renamed over the target. On any error the
temp file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, mode: int | None = None, text: bool = False) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode``: the new file's permissions (e.g. ``0o600`` for secrets); by default the usual mode
    of a new file (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    with atomic_writer(path, mode=mode) as fh:
        fh.write(data)


def write_text_atomic(path: str | Path, text: str, *, mode: int | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: str | Path, data: Any, *, mode: int | None = None, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None) -> None:
    """``data`` as JSON (sorted keys are left to the caller; NaN/inf are refused, as JSON has none)."""
    text = json.dumps(data, indent=indent, default=default, allow_nan=False)
    write_text_atomic(path, text + "\n", mode=mode)
