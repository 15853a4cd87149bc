"""Safe writes: archc replaces nothing but its own previous output, a failed or interrupted
write leaves nothing half-written behind, and a build folder is published all at once.

Every file archc writes goes through here: :func:`atomic_write` (one file: ``generate``,
``summary -o``, ``sweep --plot``, the files a backend saves into a staging folder) and
:func:`publish` (a build folder). Both refuse, as an :class:`OutputError` (one line), a target
that exists and is not a regular file (``os.replace`` would replace a device or a FIFO as
readily as a file), a target that is one of the command's inputs (the spec, a weights file;
compared by device and inode, so hard links and symbolic links are caught) and a name that is
not a plain single-line file name. :func:`publish` also replaces only files its manifest says
archc wrote there and that still hold what it wrote (size and SHA-256), and serialises
concurrent builds into one folder with a lock file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, and nothing is cleaned up as stale
    fcntl = None  # type: ignore[assignment]

MANIFEST = ".archc-build"
"""JSON: the files the last build published into a folder, each with its size and SHA-256, so
that the next build replaces them all (one the new build no longer writes is removed, not left
mixed with new ones) and never anything else (a file changed since, or not archc's, stays)."""
LOCK = ".archc-lock"
"""The lock file of a build folder: a build holds it (``flock``) while it publishes."""
STAGING_PREFIX = ".archc-staging-"
TEMP_PREFIX = ".archc-tmp-"
LOCK_TIMEOUT = 60.0
"""Seconds a build waits for another one publishing into the same folder (publishing is a few
renames; a longer wait means a stuck process)."""
STALE_TEMP_AGE = 60.0
"""Seconds after which an unlocked temporary file of :func:`atomic_write` is an interrupted
write's (a live one is locked from its first microseconds on)."""
_MANIFEST_LIMIT = 1 << 20

Inputs = Iterable[str | Path]
"""Files the command reads (the spec, a weights file): never a target."""


class OutputError(Exception):
    """A target archc will not write (not a regular file, an input of the command, not a plain
    file name, a file archc did not write) or cannot write (a file in the way, no permission,
    another build holding the folder): bad input, one line."""


def _kind(mode: int) -> str:
    from archcompiler.language.source import file_kind

    if stat.S_ISREG(mode):
        return "a file"
    return "a symbolic link" if stat.S_ISLNK(mode) else file_kind(mode)


def check_name(name: str, *, hidden: bool = False) -> str:
    """``name`` if it is a plain single-line file name, else an OutputError.

    One path component (no '/' or '\\\\', not '.' or '..'), no NUL, newline or other
    unprintable character (it would split the 'wrote' line), and, unless ``hidden``, not
    starting with '.' (archc's own bookkeeping files and temporary names do)."""
    why = ""
    if not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "names a folder"
    elif "/" in name or "\\" in name:
        why = "has a path separator"
    elif not name.isprintable():
        why = "has a control character (newline, NUL, ...)"
    elif name.startswith(".") and not hidden:
        why = "starts with '.'"
    elif len(os.fsencode(name)) > 255:
        why = "is longer than 255 bytes"
    if why:
        raise OutputError(f"file name {name!r} {why}: archc writes only plain single-line file names")
    return name


def _check_text(path: str | Path, what: str = "") -> Path:
    """A user's path as a Path: not empty (``Path('')`` is the current folder), one line."""
    text = os.fspath(path)
    lead = f"{what} " if what else ""
    if not text:
        raise OutputError(f"{lead}'': an empty name")
    if not text.isprintable():
        raise OutputError(f"{lead}{text!r}: has a control character (newline, NUL, ...)")
    return Path(text)


def _same_input(here: os.stat_result, inputs: Inputs) -> str | None:
    """The input that is the file ``here`` describes (same device and inode), if any."""
    for f in inputs:
        try:
            there = os.stat(f)
        except (OSError, ValueError):
            continue
        if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
            return os.fspath(f)
    return None


def check_target(path: str | Path, inputs: Inputs = ()) -> Path:
    """``path`` as a Path if archc may replace it: it does not exist, or it is a regular file
    (a symbolic link to one is replaced, not followed) that is none of ``inputs``.

    Called up front (before slow work) and again right before each rename."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.lexists(p):
            raise OutputError(f"{p}: is a symbolic link to nothing; archc replaces only regular files") from None
        return p
    except OSError as exc:
        raise OutputError(f"{p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{p}: is {_kind(st.st_mode)}, not a regular file; archc replaces only regular files")
    same = _same_input(st, inputs)
    if same is not None:
        which = "" if same == str(p) else f" ({same})"
        raise OutputError(f"{p}: is a file this command reads{which}; write the output elsewhere")
    return p


def check_file(path: str | Path, inputs: Inputs = ()) -> Path:
    """A file target a user named (``-o FILE``, ``--plot FILE``), checked up front: a
    single-line name, of a kind archc may replace (:func:`check_target`), not an input."""
    p = _check_text(path)
    check_name(p.name, hidden=True)
    return check_target(p, inputs)


def check_folder(path: str | Path) -> Path:
    """An output folder, refused up front (before a slow build) if it cannot be one: an empty
    or multi-line name, a file (or a FIFO, ...) in its way."""
    what = "output folder"
    out = _check_text(path, what)
    for p in (out, *out.parents):
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):  # a file further up is reported there
            continue
        except OSError as exc:
            raise OutputError(f"{what} {str(out)!r}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{what} {str(out)!r}: {str(p)!r} is {_kind(st.st_mode)}, not a folder")
        break
    return out


def atomic_write(path: str | Path, write: Callable[[str], None], *, suffix: str = ".tmp", inputs: Inputs = ()) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    ``path`` must pass :func:`check_file` (checked before ``write`` and again right before the
    rename). The temporary file is locked while it lives (so that a later write can tell an
    interrupted one's leftovers, which it removes, from a live one's), gets ordinary
    permissions (mkstemp's are 0600) and is removed if ``write`` raises. ``suffix`` ends the
    temporary name, for writers that insist on one (``keras.Model.save`` wants ``.keras``).
    """
    inputs = tuple(inputs)
    p = check_file(path, inputs)
    p.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TEMP_PREFIX}{p.name}."
    remove_stale(p.parent, temps=prefix)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=prefix, suffix=suffix)
    try:
        with suppress(OSError):  # no locks on this file system: then it is never judged stale
            _try_lock(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        check_target(p, inputs)
        os.replace(tmp, p)
    finally:
        os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return p


def atomic_write_text(path: str | Path, text: str, *, inputs: Inputs = ()) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), inputs=inputs)


# -- locks and stale leftovers ---------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    """Take ``flock(fd)`` exclusively if nobody holds it; False if someone does."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _abandoned(path: str, flags: int) -> bool:
    """True when nobody holds ``path``'s lock (its writer died); False if it is held or the
    lock cannot be taken at all (then nothing is judged stale)."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags)
    except OSError:
        return False
    try:
        return _try_lock(fd)
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock, if it was taken


def remove_stale(folder: Path, *, temps: str = TEMP_PREFIX, staging: bool = False) -> None:
    """Remove what killed writes left in ``folder``: temporary files of :func:`atomic_write`
    starting with ``temps`` that nobody holds and that are older than :data:`STALE_TEMP_AGE`
    and, with ``staging`` (under the folder's lock, see :func:`staging`), staging folders that
    nobody holds. A live build's or write's are locked, and stay."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            if entry.name.startswith(temps) and entry.is_file(follow_symlinks=False):
                old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE
                if old and _abandoned(entry.path, 0):
                    os.unlink(entry.path)
            elif (
                staging
                and entry.name.startswith(STAGING_PREFIX)
                and entry.is_dir(follow_symlinks=False)
                and _abandoned(entry.path, getattr(os, "O_DIRECTORY", 0))
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


@contextmanager
def folder_lock(out: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``out``'s lock file (:data:`LOCK`, ``flock``), waiting up to ``timeout`` seconds
    (default :data:`LOCK_TIMEOUT`) for another build to let go; then a one-line OutputError."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    limit = LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    lock = out / LOCK
    while True:
        out.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(lock, flags, 0o666)
        except OSError as exc:
            raise OutputError(f"output folder {str(out)!r}: {exc.strerror or exc} ({LOCK})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{lock}: is {_kind(os.fstat(fd).st_mode)}, not archc's lock file")
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise OutputError(
                        f"output folder {str(out)!r}: another archc build is writing into it"
                        f" (waited {limit:g} s for {lock})"
                    )
                time.sleep(0.05)
            try:
                same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file removed (with its empty folder) while this one waited
                yield
                return
        finally:
            os.close(fd)


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
    to be writable) and the staged files are on the same file system. It is locked while it
    lives; the ones of killed builds (nobody holds them) are removed when it is made, under
    the folder's lock. Removed on the way out, whatever happens; a folder created here and
    left empty is removed too.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        remove_stale(out, staging=True)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
        held = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        with suppress(OSError):  # no locks here: then no staging folder is ever judged abandoned
            _try_lock(held)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(held)
        if created:
            _remove_if_empty(out)


def _remove_if_empty(out: Path) -> None:
    """Remove ``out`` if it holds nothing but the lock file (a failed first build into it)."""
    try:
        with folder_lock(out, timeout=0):
            if {p.name for p in out.iterdir()} <= {LOCK}:
                (out / LOCK).unlink(missing_ok=True)
                out.rmdir()
    except (OutputError, OSError):
        pass


# -- publishing ------------------------------------------------------------------------------

Record = tuple[int, str]
"""(size, SHA-256 hex) of a file archc wrote."""


def _record(path: Path) -> Record:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def read_manifest(out: Path) -> dict[str, set[Record]]:
    """What :data:`MANIFEST` says archc wrote into ``out``: name -> its (size, hash) records.

    Anything that is not a well-formed entry (a hand edit, a corrupt file, the older
    one-name-per-line format, a name that is not a plain file name) is ignored: the files it
    names are then not archc's, and are never replaced or removed."""
    p = out / MANIFEST
    try:
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MANIFEST_LIMIT:
            return {}
        data = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    out_records: dict[str, set[Record]] = {}
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
        if not (isinstance(name, str) and type(size) is int and size >= 0 and isinstance(digest, str)):
            continue
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            continue
        try:
            check_name(name)
        except OutputError:
            continue
        out_records.setdefault(name, set()).add((size, digest))
    return out_records


def _manifest_text(records: Iterable[tuple[str, Record]]) -> str:
    files = [{"name": n, "size": size, "sha256": digest} for n, (size, digest) in records]
    return json.dumps({"archc": "build manifest", "version": 2, "files": files}, indent=1) + "\n"


def _holds(path: Path, records: Iterable[Record]) -> bool:
    """``path`` is a regular file (not a link) holding one of ``records``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    wanted = [r for r in records if r[0] == st.st_size]
    return stat.S_ISREG(st.st_mode) and bool(wanted) and _record(path) in wanted


def publish(staged: Path, out: Path, inputs: Inputs = ()) -> list[Path]:
    """Move every file of ``staged`` into ``out`` at once, replacing the previous build's files.

    Under ``out``'s lock (a concurrent build's publish waits), every target is checked first:
    a plain file name (:func:`check_name`), not an input, and either absent or archc's own
    previous output there (listed in the manifest with the size and hash it still has, or
    identical to the new file); anything else (a file the user changed or made, a folder, a
    FIFO) is an OutputError and nothing moves. Then the renames run with SIGINT and SIGTERM
    blocked, and the previous build's files this one does not write are removed if they
    still hold what archc wrote. The manifest lists both builds' files while the renames run,
    so even a SIGKILL in between leaves a folder whose files it accounts for.
    """
    inputs = tuple(inputs)
    names = sorted(p.name for p in staged.iterdir())
    new: dict[str, Record] = {}
    for name in names:
        check_name(name)
        if not (staged / name).is_file() or (staged / name).is_symlink():
            raise OutputError(f"{staged / name}: archc publishes only regular files")
        new[name] = _record(staged / name)
    with folder_lock(out):
        previous = read_manifest(out)
        check_target(out / MANIFEST)
        for name in names:
            target = check_target(out / name, inputs)
            if os.path.lexists(target) and not _holds(target, [*previous.get(name, ()), new[name]]):
                raise OutputError(
                    f"{target}: not what archc last wrote there (changed since, or not archc's);"
                    " move it away to build into this folder"
                )
        stale = [n for n in sorted(set(previous) - set(names)) if _holds(out / n, previous[n])]
        both = [(n, r) for n, rs in previous.items() for r in sorted(rs)] + list(new.items())
        interim, final = staged / f"{MANIFEST}.both", staged / f"{MANIFEST}.new"
        interim.write_text(_manifest_text(both), encoding="utf-8")
        final.write_text(_manifest_text(new.items()), encoding="utf-8")
        with blocked_signals():
            for name in names:  # again right before the renames: nothing slow since
                check_target(out / name, inputs)
            os.replace(interim, out / MANIFEST)
            for name in names:
                os.replace(staged / name, out / name)
            for name in stale:
                (out / name).unlink(missing_ok=True)
            os.replace(final, out / MANIFEST)
    return [out / n for n in names]


def spec_reference(spec: str, out_dir: str | Path | None = None) -> str:
    """How an output names the spec it was made from (``SPEC_SOURCE`` and the docstring of a
    generated module): never by an absolute path, which records the author's machine and
    differs in every checkout.

    With ``out_dir``: the spec's path relative to that folder when both lie inside the current
    folder (``../specs/mobilenet.yaml`` from ``generated/``: true wherever the project is
    checked out), else its file name. Without: an absolute path becomes the file name, a
    relative one stays as given. A spec that is not a file (``<spec>``, ``<dict>``) keeps its name."""
    if not spec or (spec.startswith("<") and spec.endswith(">")):
        return spec
    if out_dir is None:
        return Path(spec).name if os.path.isabs(spec) else spec
    here = os.getcwd()
    target, folder = os.path.abspath(spec), os.path.abspath(out_dir)
    if os.path.commonpath([here, target]) == here and os.path.commonpath([here, folder]) == here:
        return Path(os.path.relpath(target, folder)).as_posix()
    return Path(spec).name
