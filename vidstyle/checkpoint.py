"""The render's work directory: a manifest that says which render it belongs to, and finished frames.

Every file is written under a temporary name and moved into place with os.replace, so a crash at any moment
leaves either the old state or the new one. A finished frame's PNG is exactly the uint8 image the next frame
warm-starts from, which is what makes a resumed render identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidstyle import __version__
from vidstyle.errors import CheckpointError, CheckpointMismatch, InputError
from vidstyle.io.images import read_image, write_atomic, write_image

MANIFEST = "manifest.json"
_FINGERPRINT_CHUNK = 1 << 20


def file_fingerprint(path: Path) -> str:
    """Size plus SHA-256 of the first and last MiB: identifies a video in milliseconds, whatever its length."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_FINGERPRINT_CHUNK))
        if size > _FINGERPRINT_CHUNK:
            fh.seek(max(_FINGERPRINT_CHUNK, size - _FINGERPRINT_CHUNK))
            digest.update(fh.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()[:32]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


@dataclass(frozen=True)
class Manifest:
    """What a work directory's frames were made from; two renders may share frames only if all of it matches."""

    version: str
    input: str
    styles: tuple[str, ...]
    size: tuple[int, int]
    frame_count: int
    settings: dict[str, Any]

    def differences(self, other: Manifest) -> list[str]:
        """Human names of what differs between two manifests."""
        found = []
        if self.input != other.input:
            found.append("the input video")
        if self.styles != other.styles:
            found.append("the style image(s)")
        if self.size != other.size:
            found.append(f"the size ({other.size[0]}x{other.size[1]} before)")
        changed = sorted(k for k in self.settings.keys() | other.settings.keys()
                         if self.settings.get(k) != other.settings.get(k))
        if changed:
            found.append("setting(s) " + ", ".join("--" + k.replace("_", "-") for k in changed))
        if self.version != other.version and not found:
            found.append(f"the vidstyle version ({other.version} before)")
        return found

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        data = json.loads(text)
        # JSON turns tuples into lists; settings hold tuples too (style_blend), so normalize both ways.
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        return Manifest(data["version"], data["input"], tuple(data["styles"]), tuple(data["size"]),
                        data["frame_count"], settings)


def make_manifest(input_path: Path, style_paths: list[Path], size: tuple[int, int], frame_count: int,
                  settings: dict[str, Any]) -> Manifest:
    return Manifest(
        version=__version__,
        input=file_fingerprint(input_path),
        styles=tuple(file_sha256(p) for p in style_paths),
        size=size,
        frame_count=frame_count,
        settings={k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()},
    )


class WorkDir:
    """Frame checkpoints of one render."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.frames = self.path / "frames"

    def open(self, manifest: Manifest, restart: bool) -> int:
        """Create or reuse the directory; returns how many leading frames are already done."""
        if restart and self.path.exists():
            self.remove()
        existing = self._read_manifest()
        if existing is not None:
            diffs = manifest.differences(existing)
            if diffs:
                raise CheckpointMismatch(
                    f"work directory {self.path} belongs to another render ({'; '.join(diffs)} differ); "
                    "use --restart to discard it, or --workdir to choose another")
        try:
            self.frames.mkdir(parents=True, exist_ok=True)
            if existing is None:
                write_atomic(self.path / MANIFEST, manifest.to_json().encode(), CheckpointError)
        except OSError as exc:
            raise CheckpointError(f"cannot create work directory {self.path}: {exc.strerror or exc}") from exc
        return self.done_count()

    def _read_manifest(self) -> Manifest | None:
        path = self.path / MANIFEST
        if not path.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise CheckpointMismatch(f"{self.path} exists and is not a vidstyle work directory; "
                                         "use --workdir to choose another")
            return None
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatch(f"unreadable manifest in {self.path} ({exc}); use --restart") from exc

    def frame_path(self, index: int) -> Path:
        return self.frames / f"{index:07d}.png"

    def done_count(self) -> int:
        """Number of consecutive finished frames from frame 0 (a gap means the rest must be redone)."""
        done = 0
        while self.frame_path(done).exists():
            done += 1
        return done

    def save_frame(self, index: int, rgb: np.ndarray) -> None:
        if not self.frames.is_dir():
            raise CheckpointError(f"work directory {self.path} disappeared during the render")
        write_image(self.frame_path(index), rgb, CheckpointError)

    def load_frame(self, index: int) -> np.ndarray:
        try:
            return read_image(self.frame_path(index), "checkpoint")
        except InputError as exc:
            raise CheckpointError(f"{exc}; use --restart") from exc

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def default_workdir(output: Path) -> Path:
    """Beside the output, named after it, so two renders into one folder never share checkpoints."""
    return output.with_name(output.name + ".vidstyle-work")


def clean_stale_temporaries(directory: Path, stem: str) -> None:
    """Remove partial outputs left by a killed earlier run of the same render (kill -9 skips our cleanup)."""
    for stale in directory.glob(f".{stem}.partial-*"):
        try:
            if not _pid_alive(int(stale.stem.rsplit("-", 1)[-1])):
                stale.unlink(missing_ok=True)
        except ValueError:
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()
