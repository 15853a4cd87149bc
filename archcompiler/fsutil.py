"""Atomic writes: a failed or interrupted write leaves nothing half-written behind, and a
build folder is published all at once."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], *, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file gets ordinary permissions (mkstemp's are 0600) and is removed if
    ``write`` raises. ``suffix`` ends the temporary name, for writers that insist on one
    (``keras.Model.save`` wants ``.keras``, ``torch.export.save`` wants ``.pt2``).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


MANIFEST = ".archc-build"
"""Lists the files the last build published into a folder, so the next one can replace them
all (a file the new build no longer writes is removed, not left mixed with new ones)."""


@contextmanager
def blocked_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then arrive as usual): a publish in
    progress is never cut in half. A no-op where signals cannot be blocked (not the main
    thread's concern on Linux; Windows has no sigmask)."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder inside ``out`` (created if missing) to write a build into.

    Inside ``out``, so that publishing is a rename within one folder (no other folder needs
    to be writable) and the staged files are on the same file system. Removed on the way
    out, whatever happens; a folder created here and left empty is removed too.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".archc-staging-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def publish(staged: Path, out: Path) -> list[Path]:
    """Move every file of ``staged`` into ``out`` at once, replacing the previous build's files.

    Every target is checked first (none may be a folder), then the renames run with SIGINT
    and SIGTERM blocked; renames within one folder do not fail for space. Files of the
    previous build (its manifest) that this build does not write are removed in the same
    step, so the folder never mixes two builds. Other files in ``out`` are left alone.
    """
    names = sorted(p.name for p in staged.iterdir())
    for name in names:
        if (out / name).is_dir():
            raise IsADirectoryError(f"{out / name} is a folder, in the way of the file {name}")
    manifest = out / MANIFEST
    previous = manifest.read_text(encoding="utf-8").split() if manifest.is_file() else []
    (staged / MANIFEST).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    with blocked_signals():
        for name in names:
            os.replace(staged / name, out / name)
        os.replace(staged / MANIFEST, manifest)
        for name in set(previous) - set(names):
            stale = out / name
            if stale.is_file() and stale.parent == out:
                stale.unlink()
    return [out / n for n in names]
