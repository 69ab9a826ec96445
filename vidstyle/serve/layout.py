"""Where the service keeps things under its data directory; every path a job uses is made here, from its id."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from vidstyle.serve.queue import is_job_id

PREVIEW = "preview.jpg"  # the newest finished frame, replaced atomically while the job renders
WORKDIR = "work"  # the render's frame checkpoints: what a restarted job resumes from
RESULTS = {"video": "result.mp4", "image": "result.png"}  # a job's output, by its kind


@dataclass(frozen=True)
class DataDir:
    """`vidstyle.db` (the queue), `jobs/<id>/` (a job's files), `uploads/` (uploads being checked)."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "vidstyle.db"

    @property
    def lock(self) -> Path:
        return self.root / "server.lock"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def job(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # ids are ours, but this is the one door from an id to the file system
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs / job_id

    def create(self) -> None:
        # People's uploads and results: a folder the server makes is its user's alone (one that exists keeps its
        # mode, as its owner set it).
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (self.jobs, self.uploads):
            path.mkdir(exist_ok=True)


# Written into every upload and job folder the server makes, as it makes it: at start-up only folders that carry it
# are swept, so a folder someone else put under --data is never the server's to delete, whatever its name.
OURS = ".vidstyle-job"


def mark_as_ours(folder: Path) -> None:
    (folder / OURS).touch()


def is_ours(folder: Path) -> bool:
    return (folder / OURS).is_file()


def remove_ours(folder: Path) -> None:
    """Delete `folder` only if the server made it: not a symbolic link, and carrying the mark it gets when it is
    made. The one way the server deletes a folder, so no path it is handed (a job id, --data pointing at a folder
    of the user's) can make it delete what it did not create."""
    if folder.is_symlink() or not is_ours(folder):
        return
    # The mark goes last, and comes back where the folder stays: a server killed in the middle, or a file that cannot
    # go (busy, written meanwhile), leaves a marked folder that the next start sweeps; with the mark gone first
    # (rmtree's order is the directory's) the rest would be no one's for ever.
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile (another DELETE)
        for entry in folder.iterdir():
            if entry.name == OURS:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    with contextlib.suppress(OSError):
        (folder / OURS).unlink()
        try:
            folder.rmdir()
        except OSError:
            mark_as_ours(folder)


def drop_checkpoints(job_folder: Path) -> None:
    """The frame checkpoints of a job that ended cancelled or failed: nothing resumes it, and they are most of its
    bytes (PNG frames), which would count against --min-free until the job is deleted. The input and the preview stay
    for the job's page; only vidstyle's own files go (WorkDir.remove), and only in a job folder the server made."""
    from vidstyle.checkpoint import WorkDir  # cv2 and numpy: not on the path of `import vidstyle.serve`
    from vidstyle.errors import VidstyleError

    if not is_ours(job_folder) or job_folder.is_symlink():
        return
    work = job_folder / WORKDIR
    try:
        if work.is_dir() and not work.is_symlink():
            checkpoints = WorkDir(work)
            with checkpoints.lock():  # a render still holding it (a killed server's, finishing) keeps its files
                checkpoints.remove()
        _drop_partial_results(job_folder)
    except (OSError, VidstyleError):
        # Best effort, never the job's or the server's failure (a file it cannot delete, a DELETE removing the
        # folder meanwhile): what is left goes with the job's DELETE, or at the next start.
        pass


def _drop_partial_results(job_folder: Path) -> None:
    """The half-written output of a render that was killed (by the stall watchdog, or dying with its worker): a
    render that stops by itself removes its own, but a killed one cannot, and a video's grows with the video. A
    still is written whole under a temporary name (io.images.write_atomic) that a kill can leave too."""
    from vidstyle.io.paths import FileLock, partial_path

    # No lock on those: only ended jobs come here, whose render no longer runs.
    for name in RESULTS.values():
        for leftover in job_folder.glob(f".{name}.tmp-*"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
    partial = partial_path(job_folder / RESULTS["video"])
    if partial.is_file() and not partial.is_symlink():
        # Locked by a render still writing it (a killed server's, finishing): then it stays (BusyError).
        FileLock(partial, RESULTS["video"]).acquire().release(unlink=True)
