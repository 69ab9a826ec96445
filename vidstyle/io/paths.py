"""Where results are written: checks done before any work, the hidden partial file, and exclusive locks."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from vidstyle.errors import BusyError, OutputError, OutputExists, UsageError, shortened

# What a still may be written as: formats that OpenCV writes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# A scheme and its slashes, as in https://; a Path folds // to /, and one letter before the colon is a drive.
_WEB_ADDRESS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]+:/")


def is_web_address(name: Path | str) -> bool:
    """Whether a name given as a file is a URL (https://..., also after Path folded it to https:/...)."""
    return _WEB_ADDRESS.match(str(name)) is not None


def web_address_shown(name: Path | str) -> str:
    """A URL as it was typed: the second slash that Path folded away put back."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]+):/(?!/)", r"\1://", str(name))


def address_problem(name: Path | str, what: str, thing: str) -> str | None:
    """Why a name given as a file that is not there is an address instead, or None: nothing is downloaded (`thing`
    says what to download), and a file: address names a path, which is given instead."""
    text = str(name)
    if text[:5].lower() == "file:":  # file:///tmp/a.mp4, which Path folds to file:/tmp/a.mp4
        path = urllib.parse.unquote(urllib.parse.urlsplit(text).path)
        return f"{what} '{text}' is a file: address; give the file's path ({path})"
    if is_web_address(name):
        return f"{what} '{web_address_shown(name)}' is a web address; download the {thing} and give its file"
    return None


# Names of the process's standard input: ffmpeg, a process of its own, would read its own there.
_STANDARD_INPUT = re.compile(r"-|/dev/stdin|/dev/fd/0|/proc/(self|\d+)/fd/0")


def is_standard_input(name: Path | str) -> bool:
    return _STANDARD_INPUT.fullmatch(str(name)) is not None


def same_file(a: Path, b: Path) -> bool:
    """Whether two names reach one file: the same path, or links (symbolic or hard) to one file."""
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_file_kind(mode: int) -> str | None:
    """What a file of this st_mode is where it is not a regular file or a folder ("a named pipe", ...): a reader
    would block on it (a FIFO waits for a writer for ever) or could not seek and read it again."""
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), None)


def check_output_path(output: Path, source: Path, overwrite: bool, styles: Sequence[Path] = (),
                      what: str = "output") -> None:
    """Refuse an output that is the source or a style image, a directory, exists (without overwrite), or cannot be
    created. `what` names it in the messages (a still's animation is an output too)."""
    check_name_fits(output, what)  # first: a name over the file system's limit makes even a look at it fail
    if same_file(output, source):
        raise UsageError(f"{what} {output} is the input; choose another {what} path")
    if any(same_file(output, style) for style in styles):
        raise UsageError(f"{what} {output} is a style image; choose another {what} path")
    if output.is_dir():
        raise UsageError(f"{what} {output} is a directory; name a file")
    try:
        kind = special_file_kind(output.stat().st_mode)
    except OSError:
        kind = None  # not there (or gone since): nothing to replace
    if kind is not None:
        # Replacing it would take the pipe or device away from whatever uses it, overwrite or not.
        raise UsageError(f"{what} {output} is {kind}, not a file; name a file")
    if os.path.lexists(output) and not overwrite:  # a link to nowhere too: writing would replace the link
        raise OutputExists(f"{what} {output} exists")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"{what} directory {missing_folder(parent)}")
    try:
        # Creating a file is the only reliable test: access() says yes to root on read-only file systems.
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".vidstyle-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write in the {what} directory {parent}: {exc.strerror or exc}") from exc


def refuse_folder_name(output: object, kind: str) -> None:
    """Refuse an output named with a trailing slash, as a folder is (Path() would drop the slash that says so);
    `kind` is the file to name instead ("video", "image")."""
    if str(output).endswith(("/", os.sep)):
        raise UsageError(f"output {output} names a folder; name the {kind} file")


def missing_folder(folder: Path) -> str:
    """What is wrong with a folder that is not there, said after its name: absent, or a file where it should be."""
    return f"{folder} is a file, not a folder" if folder.exists() else f"does not exist: {folder}"


# The most a name grows by in the hidden names an output is written under first (write_atomic's
# ".NAME.tmp-<32 hex>"; the partial file's ".NAME.partial.SUFFIX" and the default work directory's
# "NAME.vidstyle-work" are shorter for every suffix an output takes).
_LONGEST_ADDITION = len("..tmp-") + 32


def check_name_fits(output: Path, what: str = "output") -> None:
    """Refuse an output name whose hidden working names would be too long for its folder's file system: a name
    that is valid in itself would otherwise fail with a bare OSError once the work is done."""
    try:
        limit = os.pathconf(output.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255  # every common Linux and macOS file system
    allowed = limit - _LONGEST_ADDITION
    if len(os.fsencode(output.name)) > allowed:
        raise UsageError(f"{what} name {shortened(output.name, 40)} is too long: at most {allowed} bytes here "
                         f"(vidstyle writes it under a longer hidden name first)")


# What a render that finds its output taken says of its frames (a still has none to keep).
FRAMES_KEPT = "; its frames are kept in the work directory, so a run that replaces it only encodes them again"


def publish(partial: Path, output: Path, replace: bool = True, kept: str = FRAMES_KEPT) -> None:
    """Rename a finished partial file to the output, durably: its data and the new name reach the disk before
    this returns, so the checkpoints removed after it are never the only copy of the render (a rename alone may
    reach the disk before the data it names, and a power cut then leaves an empty output).

    Without `replace`, an output that appeared since the render was checked (another run's, in a long batch) is
    kept and OutputExists raised, `kept` added to its message; the partial file is left for the caller to remove.
    """
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    if replace:
        os.replace(partial, output)
    else:
        rename_keeping(partial, output, kept)
    sync_folder(output.parent)


def rename_keeping(partial: Path, output: Path, then: str = "") -> None:
    """Rename `partial` to `output` unless `output` exists (OutputExists, `then` added to its message): a hard
    link, which fails on an existing name in one step; where the file system has none, a look and then the
    rename. The caller syncs the folder."""
    appeared = OutputExists(f"output {output} appeared while this render ran{then}")
    try:
        os.link(partial, output, follow_symlinks=False)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links here (FAT, some network and FUSE file systems)
        if os.path.lexists(output):
            raise appeared from None
        os.replace(partial, output)
        return
    partial.unlink()


def sync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable; where the system cannot sync a folder, it keeps
    them as it keeps anything else."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network, FUSE) refuse fsync on a folder; nothing more can be done there
    finally:
        os.close(fd)


def partial_path(output: Path) -> Path:
    """The hidden sibling an output is written to before it is renamed into place (same file system, so the
    rename is atomic). One name per output, not per process: a re-run after a kill reuses it instead of
    leaving the old one behind, and a second render of the same output finds it locked."""
    return output.with_name(f".{output.name}.partial{output.suffix}")


# An extended attribute on the partial files vidstyle makes: one left by a killed render is known as vidstyle's even
# where its work directory is gone (a user who starts over deletes that, and the hidden file is then in the way).
_PARTIAL_MARK = ("user.vidstyle", b"partial output")


def mark_partial(path: Path) -> None:
    """Mark a partial output as vidstyle's; where the file system keeps no extended attributes (or the system has no
    call for them: macOS, Windows), nothing is marked, and a leftover there is known by its work directory alone."""
    try:
        os.setxattr(path, *_PARTIAL_MARK, follow_symlinks=False)
    except (OSError, AttributeError):
        pass


def unmark_partial(path: Path) -> None:
    """Take the mark off a partial output put in place: the finished video is the user's file."""
    try:
        os.removexattr(path, _PARTIAL_MARK[0], follow_symlinks=False)
    except (OSError, AttributeError):
        pass


def is_marked_partial(path: Path) -> bool:
    try:
        return os.getxattr(path, _PARTIAL_MARK[0], follow_symlinks=False) == _PARTIAL_MARK[1]
    except (OSError, AttributeError):
        return False


def check_partial_free(output: Path, leftover_known: bool = False) -> None:
    """A file where the output's partial file goes is a killed run's where it is empty or carries vidstyle's mark
    (or where the caller knows it as one, `leftover_known`: a render's checkpoints are there); otherwise it is
    someone else's, and writing over it would destroy it."""
    partial = partial_path(output)
    try:
        found = partial.lstat()
    except FileNotFoundError:
        return
    ours = found.st_size == 0 or leftover_known or is_marked_partial(partial)
    if not stat.S_ISREG(found.st_mode) or not ours:
        raise OutputError(f"{partial} is in the way: vidstyle writes the output there first, and this file is not "
                          "known as a run's of it (no work directory, no mark of vidstyle's, which a file system "
                          "without extended attributes cannot keep); delete it if a killed vidstyle run left it, "
                          "otherwise move it or choose another output")


_RELOCKS = 100  # a name replaced this many times in a row while we lock it is not a race any more


class FileLock:
    """An exclusive flock on `path`, created if needed; the kernel drops it when the process dies, kill -9 too.

    `remove_on_release` deletes the file when the lock is released, for lock files that only we create. `kind` is
    what a person who finds it taken may choose another of (an output, a work directory).
    """

    def __init__(self, path: Path, what: str, remove_on_release: bool = False, kind: str = "output") -> None:
        self.path, self.what, self.remove_on_release, self.kind = Path(path), what, remove_on_release, kind
        self._fd: int | None = None

    def acquire(self, fresh: bool = False) -> FileLock:
        """Lock the file; with `fresh`, replace a file left by a dead process with a new, empty one.

        A killed render's ffmpeg may still be finishing its partial output (it sees its input end, not its
        parent die): a new file under the same name leaves that writer its old, unlinked one.
        """
        fd = self._lock(os.O_RDWR | os.O_CREAT)
        if fresh and os.fstat(fd).st_size > 0:
            self.path.unlink(missing_ok=True)
            os.close(fd)
            try:
                fd = self._lock(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                raise self._busy() from None
        self._fd = fd
        return self

    def _lock(self, flags: int) -> int:
        """A locked descriptor of the file the name leads to once it is locked.

        A holder may unlink the name (on release, or removing its work directory) after another process opened the
        old file and before it locks it: that lock would be on a file nobody else can find any more, beside a third
        process's new one under the name. So the name is looked up again after locking, and on a mismatch the lock
        is taken again on what it names now.
        """
        for _ in range(_RELOCKS):
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                raise
            except OSError as exc:
                raise OutputError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            if self._names(fd):
                return fd
            os.close(fd)
        raise OutputError(f"cannot lock {self.path}: the file under that name kept changing while it was locked")

    def _names(self, fd: int) -> bool:
        """Whether the lock file's name still leads to the open file `fd`."""
        try:
            named = os.stat(self.path)  # as os.open follows it
        except OSError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _busy(self) -> BusyError:
        return BusyError(f"another vidstyle render is writing {self.what} right now; wait for it to finish or "
                         f"choose another {self.kind}")

    def release(self, unlink: bool | None = None) -> None:
        if self._fd is None:
            return
        if (self.remove_on_release if unlink is None else unlink) and self._names(self._fd):
            # Before unlocking: nobody else can hold it meanwhile. Only our own file: where the name was unlinked
            # already and leads to another process's lock file now, that one is not ours to take away.
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
