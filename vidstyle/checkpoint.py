"""The render's work directory: a manifest that says which render it belongs to, and the finished frames.

Every file is written under a temporary name and moved into place with os.replace, so a crash at any moment
leaves either the old state or the new one. A finished frame's PNG is exactly the uint8 image the next frame
warm-starts from, which is what makes a resumed render identical to an uninterrupted one. Which frames are done
is the set of frame files present, not a count: pieces of a render may finish in any order. Nothing here depends
on a process id or a host, since several machines may share one work directory.

vidstyle deletes only what it made: its manifest, lock, frame files and their temporary files, and the directory
itself only when the manifest says vidstyle created it and nothing else is left in it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidstyle.config import Config, holds_frames
from vidstyle.errors import (
    RECORDED_BY_THE_RENDER,
    RESTART,
    CheckpointError,
    CheckpointMismatch,
    InputError,
    NotAWorkDir,
    OutputError,
    shown_settings,
)
from vidstyle.io.images import read_image, write_atomic, write_image
from vidstyle.io.paths import FileLock

# Config's own: where a render holds frames with it, the other render's held_structure of 1 says nothing by itself.
_HELD_STRUCTURE_DEFAULT = next(f.default for f in fields(Config) if f.name == "held_structure")

MANIFEST = "manifest.json"
LOCK = "lock"
FRAMES = "frames"
PASSES = "passes"  # the frames of passes before the last one (Config.passes), a folder per pass number
# The finished output's identity, written just before it is put in place when the checkpoints are to go after it: a
# render killed while it removed them is known by it as complete (its output is that very file), not as one to resume.
PUBLISHED = "published.json"
_WRITTEN_HERE = (MANIFEST, PUBLISHED)  # the files a work directory's own folder holds that are written atomically
CHUNKS = "chunks"  # a render on several workers: overlap frames (lead/, tail/) and running tasks' markers (running/)
CHUNK_MARKER = re.compile(r"^(\d{7,})\.(\d+)\..+\.\d+$")  # <first frame>.<pass>.<host>.<pid>
_PASS_NAME = re.compile(r"^\d{1,2}$")
_FRAME_NAME = re.compile(r"^(\d{7})\.png$")
_TEMPORARY_NAME = re.compile(r"^\.(.+)\.tmp-[0-9a-f]{32}$")  # its group: the name of the file being written
_MANIFEST_FIELD = '"frame_count"'  # in every manifest vidstyle writes, damaged or not; a key others rarely use
_LITTER = (".DS_Store", "Thumbs.db", "desktop.ini")  # what file managers leave in a folder that was looked at


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


# Settings added since manifests were first written, at the value that makes the frames of the versions before them:
# an older manifest without one is compared as having that value, so a render that asks for it resumes those frames.
SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"held_structure": 1.0}
# Settings that act only along the optical flow (config validate() keeps the others that need it at their off value).
ALONG_FLOW_ONLY = ("temporal_weight", "change_tolerance")


def _holds_no_frame(settings: dict[str, Any]) -> bool:
    """Whether a render of these manifest settings has no frame that held_structure weighs (as
    config.held_structure_unused says of a Config)."""
    return not holds_frames(settings) or settings.get("structure_weight") == 0


@dataclass(frozen=True)
class Manifest:
    """What a work directory's frames were made from; two renders may share frames only if all of it matches.

    `segments` is the render's plan, (start, stop, fresh) frame ranges; `created_dir` records whether vidstyle
    made the directory, and so may remove it. `network_dtype` is what the network computed in when the render
    began (fp32, bf16 or fp16; empty where unknown: renders on workers, older manifests). It is not compared: a
    render may resume on another device, where `precision auto` can resolve otherwise, and is then told so.
    `brightness` is the plan pass's mean luma of each frame from the render's first (none in older manifests), kept
    so that a resume darkens the same frames (fades.py); it follows from the input, which is compared.
    """

    version: str
    input: str
    styles: tuple[str, ...]
    size: tuple[int, int]
    frame_count: int
    settings: dict[str, Any]
    segments: tuple[tuple[int, int, bool], ...] = ()
    created_dir: bool = True
    network_dtype: str = ""
    brightness: tuple[float, ...] = ()

    def differences(self, other: Manifest) -> list[str]:
        """Human names of what differs between the frames two manifests describe."""
        found = []
        if self.input != other.input:
            found.append("the input video")
        if self.styles != other.styles:
            found.append("the style image(s)")
        if self.size != other.size:
            found.append(f"the size ({other.size[0]}x{other.size[1]} before)")
        changed = self.changed_settings(other)
        if changed:
            shown = shown_settings(changed, self.older_settings(other), self.earlier_values(other))
            found.append("setting(s) " + shown)
        if self.version != other.version and not found:
            found.append(f"the vidstyle version ({other.version} before)")
        return found

    def earlier_values(self, other: Manifest) -> dict[str, Any]:
        """Of the settings that differ, the value each had for `other`'s frames where it is one a user could give
        again: not the part of the video (`frames`, said in words), what the render records of itself, an unset list
        (style_blend's equal weights), nor held_structure recorded as 1 where it shaped nothing (frames_dict)."""
        told = {}
        for name in self.changed_settings(other):
            value = other.settings.get(name)
            if name in other.settings and name != "frames" and name not in RECORDED_BY_THE_RENDER and value != [] \
                    and not (name == "held_structure" and value == SETTINGS_BEFORE_THEY_EXISTED[name]):
                told[name] = value
        return told

    def older_settings(self, other: Manifest) -> dict[str, Any]:
        """Of the settings that differ, those `other` was made before they existed, with the value it was made with."""
        return {k: SETTINGS_BEFORE_THEY_EXISTED[k] for k in self.changed_settings(other)
                if k not in other.settings and k in SETTINGS_BEFORE_THEY_EXISTED}

    def changed_settings(self, other: Manifest) -> tuple[str, ...]:
        mine = {**SETTINGS_BEFORE_THEY_EXISTED, **self.settings}
        theirs = {**SETTINGS_BEFORE_THEY_EXISTED, **other.settings}
        if mine.get("flow") == theirs.get("flow") == "none":
            # With no flow they shape no frame: the fast preset recorded a temporal weight of 0 before it stood on
            # the balanced preset (15), and its frames are the same.
            for name in ALONG_FLOW_ONLY:
                mine.pop(name, None)
                theirs.pop(name, None)
        if "random" not in (mine.get("init"), theirs.get("init")):
            # The seed draws only init random's noise: renders that start their frames otherwise make the same frames
            # whatever it is. Config.frames_dict records it as 0 there; manifests written before it did keep the seed
            # given, which a resume must not take for a change.
            mine.pop("seed", None)
            theirs.pop("seed", None)
        holding = theirs if _holds_no_frame(mine) else mine if _holds_no_frame(theirs) else None
        if holding is not None and holding.get("held_structure") == _HELD_STRUCTURE_DEFAULT:
            # Recorded as 1 where it shapes nothing (Config.frames_dict): a difference from the default there is the
            # doing of the setting that made it shape nothing, which is named, not of one the user changed (a value
            # the user gave is named too, to be given again).
            mine.pop("held_structure", None)
            theirs.pop("held_structure", None)
        return tuple(sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        """Parse, checking every field's type: a damaged or edited manifest is refused, never half-trusted."""
        data = json.loads(text)
        _expect(isinstance(data, dict), "not an object")
        _expect(isinstance(data.get("version"), str) and isinstance(data.get("input"), str), "version or input")
        styles, size, count = data.get("styles"), data.get("size"), data.get("frame_count")
        _expect(isinstance(styles, list) and all(isinstance(s, str) for s in styles), "styles")
        _expect(isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size), "size")
        _expect(_is_int(count) and count > 0, "frame_count")
        _expect(isinstance(data.get("settings"), dict), "settings")
        segments = data.get("segments", [])
        _expect(isinstance(segments, list) and all(_is_segment(s, count) for s in segments), "segments")
        _expect(isinstance(data.get("created_dir", True), bool), "created_dir")
        _expect(data.get("network_dtype", "") in ("", "fp32", "bf16", "fp16"), "network_dtype")
        brightness = data.get("brightness", [])
        _expect(isinstance(brightness, list) and len(brightness) <= count
                and all(_is_number(v) and 0 <= v <= 255 for v in brightness), "brightness")
        # JSON turns tuples into lists; settings hold tuples too (style_blend), so normalize both ways.
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        return Manifest(data["version"], data["input"], tuple(styles), (size[0], size[1]), count, settings,
                        tuple((s[0], s[1], s[2]) for s in segments), data.get("created_dir", True),
                        data.get("network_dtype", ""), tuple(float(v) for v in brightness))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _is_segment(value: Any, count: int) -> bool:
    return (isinstance(value, list) and len(value) == 3 and _is_int(value[0]) and _is_int(value[1])
            and 0 <= value[0] < value[1] <= count and isinstance(value[2], bool))


def _expect(ok: bool, field: str) -> None:
    if not ok:
        raise ValueError(f"bad field: {field}")


class WorkDir:
    """Frame checkpoints of one render."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.frames = self.path / FRAMES

    def read_manifest(self) -> Manifest | None:
        """The manifest of an existing work directory, None where there is none yet; changes nothing.

        A directory that holds anything but vidstyle's files without a manifest is refused: it is not ours.
        """
        if self.path.exists() and not self.path.is_dir():
            raise NotAWorkDir(f"work directory {self.path} is a file, not a directory")
        path = self.path / MANIFEST
        if not path.exists():
            if self.path.is_dir() and not self._holds_only_empty_frames():
                raise NotAWorkDir(f"{self.path} exists and is not a vidstyle work directory (it has no {MANIFEST});"
                                  " nothing in it was touched")
            return None
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatch(f"the manifest of work directory {self.path} is damaged ({exc})") from exc

    def holds_a_render(self) -> bool:
        """Whether a render has begun here: its manifest is written before its first frame is encoded, so a partial
        output with content beside a folder without one is not that render's."""
        return (self.path / MANIFEST).is_file()

    def damaged_but_ours(self) -> bool:
        """Whether a work directory whose manifest does not parse is still recognisably vidstyle's: nothing but
        vidstyle's own names sits beside it (or a file manager's litter), and the manifest names a field that only
        vidstyle's do or frames/ holds vidstyle's frames. Anything else (a web app's manifest.json, a folder of
        other files) is not ours to discard on a restart."""
        try:
            text = (self.path / MANIFEST).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        own = {MANIFEST, LOCK, PUBLISHED, FRAMES, PASSES, CHUNKS, *_LITTER}
        if not all(entry.name in own or _TEMPORARY_NAME.match(entry.name) for entry in self.path.iterdir()):
            return False
        return _MANIFEST_FIELD in text or bool(frame_indices(self.frames))

    def _holds_only_empty_frames(self) -> bool:
        """Empty, or only an empty frames/ left by a start that failed before its manifest (older versions)."""
        entries = list(self.path.iterdir())
        return not entries or (len(entries) == 1 and entries[0] == self.frames and self.frames.is_dir()
                               and not any(self.frames.iterdir()))

    def create(self, manifest: Manifest) -> Manifest:
        """Make the directory and its manifest; a failure leaves nothing that was not there before.

        The manifest is written before frames/ exists, so a work directory with frames always has one.
        """
        made = not self.path.exists()
        manifest = replace(manifest, created_dir=made)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path / MANIFEST, manifest.to_json().encode(), CheckpointError)
            self.frames.mkdir(exist_ok=True)
        except (OSError, CheckpointError) as exc:
            self._remove_own_files(made)
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise OutputError(f"cannot create work directory {self.path}: {reason or exc}") from exc
        return manifest

    def lock(self) -> FileLock:
        """Held for the whole render, so two renders never write one work directory at once."""
        return FileLock(self.path / LOCK, f"work directory {self.path}", remove_on_release=True,
                        kind="work directory")

    def frame_path(self, index: int) -> Path:
        return self.frames / f"{index:07d}.png"

    def pass_path(self, number: int, index: int) -> Path:
        return self.path / PASSES / str(number) / f"{index:07d}.png"

    def save_pass_frame(self, number: int, index: int, rgb: np.ndarray) -> None:
        path = self.pass_path(number, index)
        if not self.frames.is_dir():
            raise CheckpointError(f"work directory {self.path} disappeared during the render")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, rgb, CheckpointError)

    def load_pass_frame(self, number: int, index: int, size: tuple[int, int]) -> np.ndarray | None:
        """A frame of an earlier pass, None where that pass has not made it."""
        path = self.pass_path(number, index)
        return self._load(path, size) if path.is_file() else None

    def drop_pass_frames(self, number: int, indices: Iterable[int]) -> None:
        """Delete the named frames of a pass and nothing else: other frames of it may be being written now. Not
        through a link (remove_frame_files' rule)."""
        if not (own_folder(self.path / PASSES) and own_folder(self.path / PASSES / str(number))):
            return
        for index in indices:
            self.pass_path(number, index).unlink(missing_ok=True)

    def remove_pass_frames(self, number: int, indices: range) -> None:
        """Drop a pass's frames once the passes after it are made (they are not needed to resume any more)."""
        self.drop_pass_frames(number, indices)
        folder = self.path / PASSES / str(number)
        if own_folder(folder.parent):
            drop_cut_short_writes(folder)
        remove_if_empty(folder)
        remove_if_empty(self.path / PASSES)

    def holds_frames(self) -> bool:
        """Whether any painted frame is here: a final one, one of an earlier pass, or a chunk's overlap frame."""
        folders = [self.frames, self.path / CHUNKS / "lead", self.path / CHUNKS / "tail"]
        passes = self.path / PASSES
        folders += [f for f in passes.iterdir() if _PASS_NAME.match(f.name)] if passes.is_dir() else []
        return any(frame_indices(folder) for folder in folders)

    def done_frames(self) -> set[int]:
        """Indices of every finished frame."""
        return frame_indices(self.frames)

    def done_pass_frames(self, number: int) -> set[int]:
        """Indices of the frames pass `number` (one before the last) has made."""
        return frame_indices(self.path / PASSES / str(number))

    def save_frame(self, index: int, rgb: np.ndarray) -> Path:
        if not self.frames.is_dir():
            raise CheckpointError(f"work directory {self.path} disappeared during the render")
        path = self.frame_path(index)
        write_image(path, rgb, CheckpointError)
        return path

    def load_frame(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """A finished frame; with `size` (width, height), one of another size is refused, naming the file."""
        return self._load(self.frame_path(index), size)

    @staticmethod
    def _load(path: Path, size: tuple[int, int] | None) -> np.ndarray:
        try:
            rgb = read_image(path, "checkpoint")
        except InputError as exc:
            raise CheckpointError(f"{exc}; delete that file to make the frame again, or {RESTART} to discard all "
                                  "the checkpoints") from exc
        if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
            raise CheckpointMismatch(f"checkpoint {path} is {rgb.shape[1]}x{rgb.shape[0]}, not the render's "
                                     f"{size[0]}x{size[1]}: it belongs to another render")
        return rgb

    def mark_publishing(self, finished: Path) -> None:
        """Record the finished partial output's identity before it is renamed to the output (a rename or a link
        keeps it): device, inode, size and modification time, which no other file shares."""
        try:
            write_atomic(self.path / PUBLISHED, json.dumps(_identity(finished)).encode(), CheckpointError)
        except (CheckpointError, OSError):
            pass  # a hint for a later run: without it a killed clean-up's leftovers are only not recognised

    def drop_cut_short_writes(self) -> None:
        """Delete the hidden files of writes that a kill cut short (checkpoints', the manifest's) from a finished
        render's kept work directory (its lock held: nothing writes here any more)."""
        drop_cut_short_writes(self.frames)
        # The directory itself may be a folder of the user's, beside other files: only the writes of its own files.
        drop_cut_short_writes(self.path, of=_WRITTEN_HERE)

    def forget_published(self) -> None:
        """A render that opens this directory again (under its lock) makes its frames anew: an earlier render's
        record of its output no longer describes them."""
        (self.path / PUBLISHED).unlink(missing_ok=True)

    def published_as(self, output: Path) -> bool:
        """Whether `output` is the file this work directory's render finished (and was removing its checkpoints
        after): then nothing here is needed any more."""
        try:
            recorded = json.loads((self.path / PUBLISHED).read_text(encoding="utf-8"))
            return bool(recorded == _identity(output))
        except (OSError, ValueError):
            return False

    def remove_finished(self) -> None:
        """What a render whose output is in place (published_as) left when it was stopped removing it: vidstyle's
        own files go, whatever is left of the manifest, and the directory if vidstyle made it."""
        try:
            manifest = self.read_manifest()
        except (CheckpointMismatch, NotAWorkDir):
            manifest = None
        self._remove_own_files(manifest is not None and manifest.created_dir)

    def remove(self) -> None:
        """Delete vidstyle's own files here, and the directory if vidstyle created it and it is left empty."""
        try:
            manifest = self.read_manifest()
        except CheckpointMismatch:
            if not self.damaged_but_ours():
                return  # not recognisably ours: touch nothing
            manifest = None  # ours, with a damaged manifest: our files go, the directory stays
        self._remove_own_files(manifest.created_dir if manifest is not None else False)

    def _remove_own_files(self, remove_directory: bool) -> None:
        remove_chunk_files(self.path / CHUNKS)  # a render on several workers that a sequential one took over
        passes = self.path / PASSES
        if own_folder(passes):
            for folder in passes.iterdir():
                if _PASS_NAME.match(folder.name):
                    remove_frame_files(folder)
            remove_if_empty(passes)
        remove_frame_files(self.frames)
        if self.path.is_dir():
            # After the frames, which it tells the next run are a finished render's, and before the manifest: a
            # directory left with the record alone would be no work directory at all.
            (self.path / PUBLISHED).unlink(missing_ok=True)
            (self.path / MANIFEST).unlink(missing_ok=True)
            drop_cut_short_writes(self.path, of=_WRITTEN_HERE)
            # Last: a render that starts here once the lock file is gone takes a new one, and nothing of its own
            # may be deleted after that.
            (self.path / LOCK).unlink(missing_ok=True)
            if remove_directory:
                remove_if_empty(self.path)


def _identity(path: Path) -> list[int]:
    found = path.stat()
    return [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns]


def frame_indices(folder: Path) -> set[int]:
    """Indices of the frame files (0000012.png) in a folder; none where it does not exist."""
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := _FRAME_NAME.match(p.name))}


def remove_chunk_files(folder: Path, markers_only: bool = False) -> None:
    """Delete a chunks/ folder's overlap frames and task markers, then each folder left empty; anything else in it
    stays, and the folders with it. A chunks/ that is a link is not followed."""
    if not own_folder(folder):
        return
    if not markers_only:
        for role in ("lead", "tail"):
            remove_frame_files(folder / role)
    running = folder / "running"
    for path in running.iterdir() if own_folder(running) else ():
        if CHUNK_MARKER.match(path.name):
            path.unlink(missing_ok=True)
    remove_if_empty(running)
    if not markers_only:
        remove_if_empty(folder)


def remove_frame_files(folder: Path) -> None:
    """Delete the frame files (0000012.png) and cut-short writes in a folder, then the folder if nothing else is
    left: a file that vidstyle does not name this way is never its own to delete, and keeps the folder too. A folder
    that is a link is not followed: what it leads to was not made here, whatever its files are named."""
    if not own_folder(folder):
        return
    for entry in folder.iterdir():
        if _FRAME_NAME.match(entry.name) or _TEMPORARY_NAME.match(entry.name):
            entry.unlink(missing_ok=True)
    remove_if_empty(folder)


def drop_cut_short_writes(folder: Path, of: Sequence[str] | None = None) -> None:
    """Delete the hidden files that writes cut short by a stop left in a folder (only those of the files named `of`
    where given); not through a link."""
    for entry in folder.iterdir() if own_folder(folder) else ():
        written = _TEMPORARY_NAME.match(entry.name)
        if written and (of is None or written.group(1) in of):
            entry.unlink(missing_ok=True)


def own_folder(path: Path) -> bool:
    """A folder whose files removing checkpoints may look through: a real one, not a link, which leads to what
    this render did not make, whatever its files are named."""
    return path.is_dir() and not path.is_symlink()


def remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # something else lives there: it stays, and so does the directory


def default_workdir(output: Path) -> Path:
    """Beside the output, named after it, so two renders into one folder never share checkpoints."""
    return output.with_name(output.name + ".vidstyle-work")
