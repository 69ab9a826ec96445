"""The size people asked for: stylize at --size, write at --output-size; never enlarge a small source silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import decoded, run_cli

from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video

TINY = ("--iters", "1", "--first-iters", "2", "--device", "cpu", "--keep-frames")


def test_written_at_the_source_size_from_a_smaller_render(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "64",
                   "--output-size", "source", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "written at 160x90, scaled from the 64x36 render\n" in proc.stderr, "the video's shape: not stretched"
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (160, 90, 12)
    checkpoint = read_image(tmp_path / "o.mp4.vidstyle-work" / "frames" / "0000000.png")
    assert checkpoint.shape == (36, 64, 3), "the checkpoints keep the render size"
    # The written frame is the checkpoint enlarged: shrunk back, it is close to the checkpoint (H.264 aside).
    import cv2

    back = cv2.resize(decoded(out)[0], (64, 36), interpolation=cv2.INTER_AREA)
    assert np.abs(back.astype(int) - checkpoint).mean() < 6


def test_odd_sides_asked_for_are_made_even_and_said(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "64",
                   "--output-size", "33x17", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert ("written at 34x18 (33x17 asked: H.264 needs even sides), scaled from the 64x36 render, stretched: its "
            "shape is not the video's") in proc.stderr, "16:9 written at 17:9"
    info = probe_video(out)
    assert (info.width, info.height) == (34, 18)
    # Evened to the render's own size, it is still said.
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "64",
                   "--output-size", "63x35", "--overwrite", "--restart", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "written at 64x36 (63x35 asked: H.264 needs even sides), the render's own size" in proc.stderr


def test_a_small_source_is_rendered_at_its_own_size_and_said(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "512", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "the source is 160x90: rendered at its own size, not enlarged to 512" in proc.stderr
    info = probe_video(out)
    assert (info.width, info.height) == (160, 90)


def test_an_impossible_output_size_is_refused(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                   "--output-size", "huge")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vidstyle: error: --output-size must be render, source, WxH or a long side N (got 'huge')"]
    assert list(tmp_path.iterdir()) == []


def test_an_output_long_side_under_the_smallest_render_is_refused() -> None:
    """A long side of 1 was evened to a 2x2 video whatever the picture's shape."""
    import vidstyle
    from vidstyle.errors import SettingError

    with pytest.raises(SettingError, match=r"^output_size a long side must be at least 16 pixels \(got 1\)$"):
        vidstyle.make_config(output_size="1")
    assert vidstyle.make_config(output_size="16").output_size == "16"
    with pytest.raises(SettingError, match=r"^output_size each side must be at least 16 pixels \(got 1x1\)$"):
        vidstyle.make_config(output_size="1x1")
    with pytest.raises(SettingError, match=r"^output_size each side must be at least 16 pixels \(got 640x15\)$"):
        vidstyle.make_config(output_size="640x15")
    assert vidstyle.make_config(output_size="16x16").output_size == "16x16"
    for too_large in ("100000x2", "8194x10", "100000", "9" * 5000):  # any number of digits: the same refusal
        with pytest.raises(SettingError, match=r"^output_size sides must be at most 8192 pixels"):
            vidstyle.make_config(output_size=too_large)


def test_sizes_that_even_sides_changed_are_said(lavfi_clip, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    """A source with odd sides is rendered 1 px larger, and a long side asked for that is odd is written 1 px off:
    both said at the start, as an odd WxH is."""
    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, started_event

    def notes(clip: Path, **settings: object) -> tuple[str, ...]:
        job = prepare_render(clip, [starry], tmp_path / "o.mp4", make_config("fast", device="cpu", **settings))
        return started_event(job, "cpu", [], set()).notes

    odd = lavfi_clip("odd_63x35.mp4", size="63x35", audio=False)
    assert "the source is 63x35: rendered at 64x36, its own size with even sides" in notes(odd, size=64), \
        "at a size of 64: not 'not enlarged to 64'"
    assert "the source is 63x35: rendered at 64x36, its own size with even sides, not enlarged to 96" in notes(
        odd, size=96)
    assert "written at 64x36 (63 asked: H.264 needs even sides), the render's own size" in notes(
        bunny_short, size=64, output_size="63")
    assert not [n for n in notes(bunny_short, size=64, output_size="64") if n.startswith("written at")]


def test_the_short_side_follows_the_long_side_as_evened() -> None:
    """The short side came from the long side as asked, not as evened: 600x400 at 65 px was 64x44 (1.45, not 1.5)."""
    from vidstyle.io.probe import size_to_fit

    assert size_to_fit(600, 400, 65) == (64, 42) and size_to_fit(400, 600, 65) == (42, 64)
    for width, height in ((600, 400), (1920, 1080), (1080, 1920), (97, 55), (640, 480), (1000, 3)):
        for asked in range(16, 300):
            size = size_to_fit(width, height, asked)
            long, short = max(size), min(size)
            assert long % 2 == 0 and short % 2 == 0 and abs(long - asked) <= 1
            exact = long * min(width, height) / max(width, height)
            assert abs(short - exact) <= 1 or short == 2, (width, height, asked, size)
            assert (size[0] >= size[1]) == (width >= height)


def test_a_still_says_what_a_video_says_of_its_sizes_before_it_is_painted(starry: Path, tmp_path: Path) -> None:
    """A still's output_size of another shape, or a picture smaller than the size asked, was written without a
    word (a video's render says both)."""
    import vidstyle
    from vidstyle.events import ImageStarted
    from vidstyle.io.images import resize_rgb, write_image

    picture = tmp_path / "picture.png"
    write_image(picture, resize_rgb(read_image(starry), (600, 400)))
    started: list[ImageStarted] = []

    def paint(**settings: object) -> ImageStarted:
        started.clear()
        config = vidstyle.make_config(device="cpu", first_iters=1, precision="fp32", **settings)
        vidstyle.stylize_image(picture, [starry], tmp_path / "o.png", config, overwrite=True,
                               on_event=lambda e: started.append(e) if isinstance(e, ImageStarted) else None)
        (event,) = started
        return event

    stretched = paint(size=48, output_size="300x100")
    assert (stretched.size, stretched.written) == ((48, 32), (300, 100))
    assert stretched.notes == ("written at 300x100, scaled from the 48x32 painting, stretched: its shape is not "
                               "the picture's",)
    assert read_image(tmp_path / "o.png").shape == (100, 300, 3)
    assert paint(size=48, output_size="96").notes == ("written at 96x64, scaled from the 48x32 painting",)
    assert paint(size=48).notes == ()
    small = paint(size=700)  # larger than the picture: painted at its own size
    assert small.size == small.written == (600, 400)
    assert small.notes == ("the picture is 600x400: painted at its own size, not enlarged to 700",)
    write_image(picture, resize_rgb(read_image(starry), (47, 31)))  # odd sides, evened as a video's are
    assert paint(size=64).notes == ("the picture is 47x31: painted at 48x32, its own size with even sides, not "
                                    "enlarged to 64",)
    assert paint(size=48).notes == ("the picture is 47x31: painted at 48x32, its own size with even sides",)


def test_a_transparent_still_keeps_its_transparency_where_the_output_holds_it(starry: Path, tmp_path: Path) -> None:
    """A cut-out painted over white came back as a white rectangle, without a word."""
    import cv2

    import vidstyle
    from vidstyle.events import ImageStarted
    from vidstyle.io.images import resize_rgb

    bgra = np.dstack((resize_rgb(read_image(starry), (96, 64))[..., ::-1], np.full((64, 96), 255, np.uint8)))
    bgra[:, :32, 3] = 0  # the left third cut away
    picture = tmp_path / "cut_out.png"
    cv2.imwrite(str(picture), bgra)

    def paint(output: Path, **settings: object) -> tuple[str, ...]:
        started: list[ImageStarted] = []
        config = vidstyle.make_config(device="cpu", first_iters=1, precision="fp32", size=48, **settings)
        vidstyle.stylize_image(picture, [starry], output, config,
                               on_event=lambda e: started.append(e) if isinstance(e, ImageStarted) else None)
        return started[0].notes

    assert paint(tmp_path / "o.png") == ("the picture is transparent: painted over white, and written with its "
                                         "transparency",)
    written = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (32, 48, 4)
    assert (written[:, :15, 3] == 0).all() and (written[:, 17:, 3] == 255).all()
    assert paint(tmp_path / "big.webp", output_size="source")[-1].endswith("written with its transparency")
    big = cv2.imread(str(tmp_path / "big.webp"), cv2.IMREAD_UNCHANGED)
    assert big.shape == (64, 96, 4), "the alpha at the written size"
    assert (big[:, :31, 3] == 0).all() and (big[:, 33:, 3] == 255).all()
    for suffix in (".jpg", ".tif"):
        assert paint(tmp_path / f"o{suffix}") == (f"the picture is transparent: painted over white, and written as "
                                                  f"{suffix} without its transparency (write .png or .webp to keep "
                                                  "it)",)
        assert cv2.imread(str(tmp_path / f"o{suffix}"), cv2.IMREAD_UNCHANGED).shape == (32, 48, 3)


def test_a_half_transparent_colour_is_stored_as_itself_not_as_laid_over_white() -> None:
    """The painting is made of the picture over white; stored under its alpha as it was, a half-transparent red came
    back pink over any background (laid over white twice)."""
    from vidstyle.io.images import straight_colours

    alpha = np.array([[128, 255, 0, 64]], np.uint8)
    red = np.array([[[255, 0, 0]] * 4], np.uint8)
    opacity = alpha[..., None] / 255.0
    over_white = np.round(red * opacity + 255 * (1 - opacity)).astype(np.uint8)  # as read_picture gives it
    stored = straight_colours(over_white, alpha)
    assert np.abs(stored[0, [0, 1, 3]].astype(int) - (255, 0, 0)).max() <= 2
    assert (stored[0, 2] == over_white[0, 2]).all(), "a transparent pixel keeps its colour"
    shown = np.round(stored * opacity + 255 * (1 - opacity))
    assert np.abs(shown - over_white).max() <= 1, "over white it shows what was painted"


_TESTSRC = "testsrc2=size=64x48:rate=25:duration=0.2"


@pytest.mark.parametrize(("name", "source", "encode", "transparent"), [
    # VP9's alpha, kept beside the picture
    ("alpha.webm", _TESTSRC, ("-vf", "format=yuva420p", "-c:v", "libvpx-vp9"), True),
    ("alpha.mov", _TESTSRC, ("-vf", "format=rgba", "-c:v", "png"), True),
    # A GIF's decoder gives every picture an alpha channel: only a transparent pixel makes it transparent.
    ("opaque.gif", _TESTSRC, (), False),
    ("keyed.gif", "color=red@0.0:s=64x48:r=25:d=0.2,format=rgba,drawbox=x=10:y=10:w=20:h=20:color=blue@1:t=fill",
     ("-vf", "split[a][b];[a]palettegen=reserve_transparent=1[p];[b][p]paletteuse=alpha_threshold=128"), True),
])
def test_a_source_with_transparency_is_said_to_lose_it(media: Path, bunny_short: Path, starry: Path, tmp_path: Path,
                                                       name: str, source: str, encode: tuple[str, ...],
                                                       transparent: bool) -> None:
    """MP4's H.264 holds no alpha: the render paints what the frames keep under it, which was said nowhere; every
    GIF was said to have transparency."""
    from conftest import ffmpeg

    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, started_event

    clip = media / name
    ffmpeg("-f", "lavfi", "-i", source, *encode, str(clip))
    job = prepare_render(clip, [starry], tmp_path / "o.mp4", make_config("fast", device="cpu", size=64))
    assert job.info.alpha == transparent
    said = "the source has an alpha channel, which the output cannot keep: where it makes pixels transparent, the " \
           "colours stored under them are painted as if they were opaque"
    assert (said in started_event(job, "cpu", [], set()).notes) == transparent
    assert not probe_video(bunny_short).alpha
