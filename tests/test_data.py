"""Tests for normalcy.images.io: image/mask reading, file listing, MVTec-layout loading."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from normalcy.errors import ImageError, InputError
from normalcy.images.io import (
    IMAGE_SUFFIXES,
    Dataset,
    MaskSizeWarning,
    Sample,
    image_size,
    iter_images,
    list_files,
    load_dataset,
    read_image,
    read_mask,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rgb(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == (h, w, 3)


# ------------------------------------------------------------------ read_image modes


def test_suffixes() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} <= IMAGE_SUFFIXES
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)


def test_read_rgb_png_exact(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    _check_rgb(out, 24, 32)
    np.testing.assert_array_equal(out, a)


def test_plain_pngs_decoded_by_imagecodecs_give_pillows_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import normalcy.images.io as data

    rgb, grey = _rgb(40, 50, seed=3), _rgb(40, 50, seed=4)[:, :, 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).save(tmp_path / "trns.png", transparency=int(grey[0, 0]))  # a transparent grey level
    assert data._read_plain(tmp_path / "trns.png") is None  # goes the Pillow way, composited on black
    assert (read_image(tmp_path / "trns.png")[0, 0] == 0).all()
    fast = {n: data._read_plain(tmp_path / f"{n}.png") for n in ("rgb", "grey")}
    np.testing.assert_array_equal(fast["rgb"], rgb)
    np.testing.assert_array_equal(fast["grey"], np.repeat(grey[:, :, None], 3, axis=2))
    monkeypatch.setattr(data, "_read_plain", lambda p: None)  # Pillow alone: the same pixels
    for n in ("rgb", "grey"):
        np.testing.assert_array_equal(read_image(tmp_path / f"{n}.png"), fast[n])


def _png_with_chunk(path: Path, pixels: np.ndarray, kind: bytes, data: bytes) -> Path:
    """``pixels`` as a PNG with one extra chunk right after IHDR (CRC right)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    png = buf.getvalue()
    chunk = len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    path.write_bytes(png[:33] + chunk + png[33:])
    return path


def test_interlaced_pngs_give_pillows_pixels(tmp_path: Path) -> None:
    """The fast path's decoder (libspng) on Adam7-interlaced grey and RGB PNGs, which Pillow cannot write."""
    import normalcy.images.io as data

    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    for colour_type, pixels in ((2, _rgb(13, 11, seed=8)), (0, _rgb(13, 11, seed=9)[:, :, :1])):
        raw = b"".join(b"\0" + row.tobytes() for x, y, dx, dy in passes for row in pixels[y::dy, x::dx]
                       if pixels[y::dy, x::dx].size)
        ihdr = (11).to_bytes(4, "big") + (13).to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 1])
        path = tmp_path / f"i{colour_type}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
            len(d).to_bytes(4, "big") + k + d + zlib.crc32(k + d).to_bytes(4, "big")
            for k, d in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(raw)), (b"IEND", b""))))
        expected = np.asarray(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(expected, np.broadcast_to(pixels, (13, 11, 3)))
        np.testing.assert_array_equal(data._read_plain(path), expected)


def test_pngs_with_odd_colour_profiles_print_nothing(tmp_path: Path, synthetic_root: Path) -> None:
    """libpng printed "PNG warning: iCCP: profile 'ICC Profile': 'RGB ': RGB color space not permitted on
    grayscale PNG" (and "sBIT: invalid", ...) on stderr once per file: thousands of lines on a large run. The
    pixels are Pillow's (which ignores colour profiles too), and nothing is printed."""
    from normalcy.detectors import create
    from normalcy.images.features import FeatureExtractor

    rgb = _rgb(40, 48, seed=7)
    profile = zlib.compress(b"\0\0\x0c\x48" + b"\0" * 12 + b"RGB " + b"\0" * 400)  # a broken RGB profile
    new = tmp_path / "new"
    new.mkdir()
    files = [_png_with_chunk(new / "grey_profile.png", rgb[:, :, 0], b"iCCP", b"ICC Profile\0\0" + profile),
             _png_with_chunk(new / "short_profile.png", rgb, b"iCCP", b"ICC Profile\0\0" + zlib.compress(b"x" * 9)),
             _png_with_chunk(new / "bad_sbit.png", rgb, b"sBIT", b"\x09\x09\x09")]
    for f in files:
        np.testing.assert_array_equal(read_image(f), np.asarray(Image.open(f).convert("RGB")))
    model = tmp_path / "model"
    create("gaussian", FeatureExtractor(image_size=64)).fit(list_files(synthetic_root / "train" / "good")).save(model)
    r = subprocess.run([sys.executable, "-m", "normalcy.cli", "predict", str(model), str(new), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "o" / "scores.csv", newline="") as fh:
        assert sorted(Path(row["path"]).name for row in csv.DictReader(fh)) == sorted(f.name for f in files)
    assert not [line for line in r.stderr.splitlines() if "png warning" in line.lower()], r.stderr  # libpng's, PNG's


def test_grey_images_are_made_rgb_by_opencv_to_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A grey image read (the fast JPEG and PNG paths, Pillow's L and 16-bit modes) becomes RGB by OpenCV's copy, 2x
    as fast as np.repeat's: each channel the grey value, contiguous; an empty array is repeated (OpenCV refuses it)."""
    import cv2

    import normalcy.images.io as data

    grey = _rgb(37, 53, seed=3)[:, :, 0]
    for g in (grey, grey[:, ::2], np.zeros((0, 4), np.uint8)):
        rgb = data._grey_to_rgb(g)
        np.testing.assert_array_equal(rgb, np.repeat(g[:, :, None], 3, axis=2))
        assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    calls, convert = [], cv2.cvtColor
    monkeypatch.setattr(cv2, "cvtColor", lambda *a: calls.append(a[1]) or convert(*a))
    Image.fromarray(grey).save(tmp_path / "g.jpg")
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    jpeg = np.asarray(Image.open(tmp_path / "g.jpg").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "g.jpg"), jpeg)
    for name in ("g.png", "g16.png"):  # 16 bits read as value / 257
        np.testing.assert_array_equal(read_image(tmp_path / name), np.repeat(grey[:, :, None], 3, axis=2))
    assert calls == [cv2.COLOR_GRAY2RGB] * 3


def test_plain_jpegs_decoded_by_imagecodecs_give_pillows_pixels(tmp_path: Path) -> None:
    """Colour (every chroma subsampling, baseline and progressive) and grey JPEGs: imagecodecs' pixels are
    Pillow's exactly; EXIF (may rotate), CMYK and truncated files are left to Pillow."""
    import normalcy.images.io as data

    photo = Image.fromarray(_rgb(60, 80, seed=5)).resize((160, 120))
    for sub in (0, 1, 2):
        for progressive in (False, True):
            path = tmp_path / f"c{sub}{progressive}.jpg"
            photo.save(path, quality=85, subsampling=sub, progressive=progressive)
            np.testing.assert_array_equal(data._read_plain(path), np.asarray(Image.open(path).convert("RGB")))
    photo.convert("L").save(tmp_path / "g.jpg")
    np.testing.assert_array_equal(data._read_plain(tmp_path / "g.jpg"),
                                  np.asarray(Image.open(tmp_path / "g.jpg").convert("RGB")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    photo.save(tmp_path / "e.jpg", exif=exif)
    photo.convert("CMYK").save(tmp_path / "k.jpg")
    (tmp_path / "t.jpg").write_bytes((tmp_path / "g.jpg").read_bytes()[:400])
    for name in ("e.jpg", "k.jpg", "t.jpg"):
        assert data._read_plain(tmp_path / name) is None, name
    assert read_image(tmp_path / "e.jpg").shape == (160, 120, 3)  # Pillow applied the rotation
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / "t.jpg")


def test_read_rgb_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "x.jpg", quality=95)
    _check_rgb(read_image(str(tmp_path / "x.jpg")), 24, 32)


def test_read_l(tmp_path: Path) -> None:
    g = np.arange(24 * 32, dtype=np.uint32).reshape(24, 32).astype(np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    _check_rgb(out, 24, 32)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_read_la(tmp_path: Path) -> None:
    im = Image.new("LA", (5, 4), (200, 255))
    im.save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    _check_rgb(out, 4, 5)
    assert (out == 200).all()


def test_read_rgba_alpha_composited_on_black(tmp_path: Path) -> None:
    a = np.zeros((4, 6, 4), dtype=np.uint8)
    a[..., :3] = (10, 20, 30)
    a[:, :3, 3] = 255  # left half opaque
    a[:, 3:, 3] = 0  # right half transparent
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    _check_rgb(out, 4, 6)
    assert (out[:, :3] == (10, 20, 30)).all()
    assert (out[:, 3:] == 0).all()


def test_read_palette(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3))
    pal = [0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6)
    im.putpalette(pal)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    _check_rgb(out, 3, 4)
    assert tuple(out[1, 1]) == (255, 0, 0)
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_read_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3))
    pal = [0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 6)
    im.putpalette(pal)
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 0  # index 0 (green) is transparent
    im.save(tmp_path / "pt.png", transparency=0)
    out = read_image(tmp_path / "pt.png")
    _check_rgb(out, 3, 4)
    assert tuple(out[1, 1]) == (255, 0, 0)
    assert tuple(out[0, 0]) == (0, 0, 0)  # transparent green -> black


def test_read_palette_gif(tmp_path: Path) -> None:
    Image.fromarray(_rgb(8, 8)).convert("P").save(tmp_path / "x.gif")
    _check_rgb(read_image(tmp_path / "x.gif"), 8, 8)


def test_read_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (6, 5), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    out = read_image(tmp_path / "c.jpg")
    _check_rgb(out, 5, 6)
    assert out.mean() > 240  # no ink -> white


def test_read_16bit_png_pil(tmp_path: Path) -> None:
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "i16.png")
    out = read_image(tmp_path / "i16.png")
    _check_rgb(out, 1, 4)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_read_16bit_png_cv2(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    a = np.array([[0, 257, 65535], [514, 1000, 65000]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "cv16.png"), a)
    out = read_image(tmp_path / "cv16.png")
    _check_rgb(out, 2, 3)
    assert out[0, :, 0].tolist() == [0, 1, 255]
    assert out[1, 0, 0] == 2


def test_read_16bit_tiff_big_endian(tmp_path: Path) -> None:
    a = np.array([[0, 65535]], dtype=">u2")
    im = Image.frombytes("I;16B", (2, 1), a.tobytes())
    im.save(tmp_path / "b.tif")
    out = read_image(tmp_path / "b.tif")
    assert out[0, :, 0].tolist() == [0, 255]


def test_skipped_files_are_one_line_in_a_command_and_listed_once_by_the_cli(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    """Each unreadable file was a warning as it was read, then a line of the command's list of them: 10,000
    unreadable files were 20,000 lines. In a command they are one line (said by the command line only where it
    fails, since its list is not printed then), and the list shows 20, then a count."""
    from conftest import run_cli

    from normalcy.cli import _report_skipped
    from normalcy.images.io import iter_images, read_notes, skips_listed

    bad = [tmp_path / f"z{i:02d}.png" for i in range(25)]
    for p in bad:
        p.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        with read_notes():
            assert list(iter_images(bad, [])) == []
        assert [r.getMessage() for r in caplog.records] == [
            f"{bad[0]}: skipped: empty file (0 bytes) (and 24 more file(s) skipped: z01.png, z02.png, z03.png, ...)"]
        caplog.clear()
        with skips_listed(), read_notes():
            skipped: list[tuple[Path, str]] = []
            assert list(iter_images(bad, skipped)) == [] and len(skipped) == 25  # the caller lists them
            list(iter_images(bad[:2], [], listed=False))  # a caller that drops them: said
        assert [r.getMessage() for r in caplog.records] == [
            f"{bad[0]}: skipped: empty file (0 bytes) (and 1 more file(s) skipped: z01.png)"]
    capsys.readouterr()  # the warnings above, where an earlier test gave the logger a handler on stderr
    _report_skipped(skipped)
    listed = capsys.readouterr().err.splitlines()
    assert len(listed) == 22 and "z19.png: empty file (0 bytes)" in listed[20] and "and 5 more" in listed[21]
    r = run_cli("fit", tmp_path, "-o", tmp_path.parent / f"{tmp_path.name}-model")
    assert r.returncode == 1 and "none of the 25 training files" in r.stderr
    assert r.stderr.count("z24.png") == 0 and "(and 24 more file(s) skipped: z01.png" in r.stderr, r.stderr


def test_a_16bit_grey_png_with_a_transparent_level_is_on_black(tmp_path: Path) -> None:
    """An 8-bit grey PNG's transparent level (tRNS) read black, a 16-bit one's kept its grey (30000: 117)."""
    a = np.full((2, 3), 30000, np.uint16)
    a[0, 0] = 65535
    Image.fromarray(a).save(tmp_path / "t16.png", transparency=30000)
    assert read_image(tmp_path / "t16.png")[:, :, 0].tolist() == [[255, 0, 0], [0, 0, 0]]
    Image.fromarray(a).save(tmp_path / "opaque16.png")
    assert read_image(tmp_path / "opaque16.png")[:, :, 0].tolist() == [[255, 117, 117], [117, 117, 117]]


def _with_trns(png: bytes, colour: tuple[int, int, int]) -> bytes:
    """``png`` with a tRNS chunk (a transparent colour) before its image data."""
    import struct

    body = struct.pack(">HHH", *colour)
    i = png.find(b"IDAT") - 4
    return png[:i] + struct.pack(">I", 6) + b"tRNS" + body + struct.pack(">I", zlib.crc32(b"tRNS" + body)) + png[i:]


def test_an_rgb_png_with_a_transparent_colour_is_on_black_at_8_and_16_bits(tmp_path: Path) -> None:
    """An RGB PNG's transparent colour (tRNS) kept its colour, at 8 bits as at 16 (where Pillow compares the
    16-bit colour with pixels it reads at 8 bits), though grey, palette and alpha PNGs read transparency on
    black, as the README says: both read black now, the same as each other."""
    import cv2

    rgb16 = np.random.default_rng(0).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    key = (1000, 40000, 65000)
    rgb16[1:3, 2:5] = key
    png16 = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))[1].tobytes()
    (tmp_path / "rgb48.png").write_bytes(_with_trns(png16, key))
    rgb8 = (rgb16 >> 8).astype(np.uint8)
    png8 = cv2.imencode(".png", np.ascontiguousarray(rgb8[..., ::-1]))[1].tobytes()
    (tmp_path / "rgb24.png").write_bytes(_with_trns(png8, tuple(v >> 8 for v in key)))
    expected = rgb8.copy()
    expected[1:3, 2:5] = 0
    assert np.array_equal(read_image(tmp_path / "rgb24.png"), expected)
    assert np.array_equal(read_image(tmp_path / "rgb48.png"), expected)
    (tmp_path / "opaque48.png").write_bytes(png16)  # without tRNS: as before (Pillow's 8 bits)
    assert np.array_equal(read_image(tmp_path / "opaque48.png"), rgb8)


def test_read_mode_i_clipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = np.array([[-5, 0, 65535, 100000]], dtype=np.int32)
    Image.fromarray(a, mode="I").save(tmp_path / "i32.tif")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        out = read_image(tmp_path / "i32.tif")
    assert out[0, :, 0].tolist() == [0, 0, 255, 255]
    assert "i32.tif: 32-bit integer image: 2 of 4 values outside 0..65535 (they span -5..100000) are clipped" \
        in caplog.text


def test_read_mode_f(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Float values are read on 0..1, else on 0..255; what falls outside is clipped and NaN read as 0, each said
    naming the file (a float TIFF of 0..4095 came out white, one of -1..1 half black, without a word)."""
    inside = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(inside, mode="F").save(tmp_path / "f0.tif")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / "f0.tif")[0, :, 0].tolist() == [0, 128, 255]
    assert caplog.text == ""
    unit = np.array([[0.0, 0.5, 1.0, -0.2]], dtype=np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "f1.tif")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / "f1.tif")[0, :, 0].tolist() == [0, 128, 255, 0]
    assert "f1.tif: float image: 1 of 4 values outside 0..1 (they span -0.2..1) are clipped to it: scale the " \
        "file to 0..1 or 0..255" in caplog.text
    big = np.array([[0.0, 100.0, 255.0, 300.0, np.nan]], dtype=np.float32)
    Image.fromarray(big, mode="F").save(tmp_path / "f2.tif")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / "f2.tif")[0, :, 0].tolist() == [0, 100, 255, 255, 0]
    assert "f2.tif: float image: 1 of 5 values outside 0..255 (they span 0..300) are clipped to it: scale the " \
        "file to 0..1 or 0..255; 1 NaN or infinite values read as 0" in caplog.text
    past = np.array([[0.0, 0.5, 1.02]], dtype=np.float32)  # 0..1 data a little past 1: read on 0..255, black
    Image.fromarray(past, mode="F").save(tmp_path / "f3.tif")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / "f3.tif")[0, :, 0].tolist() == [0, 0, 1]
    assert "f3.tif: float image of values up to 1.02, over 1 so read on 0..255: it is nearly black; scale the file " \
        "to 0..1 if that is its range" in caplog.text


@pytest.mark.parametrize("suffix", [".gif", ".tif", ".png", ".webp"])
def test_animations_and_multipage_files_say_only_their_first_frame_is_read(
        tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture) -> None:
    """An animated GIF, PNG or WebP, or a multi-page TIFF, was read as its first frame without a word."""
    frames = [Image.fromarray(np.full((6, 8, 3), v, np.uint8)) for v in (40, 200, 120)]
    frames[0].save(tmp_path / f"a{suffix}", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / f"one{suffix}")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / f"one{suffix}")[0, 0, 0] == 40
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert read_image(tmp_path / f"a{suffix}")[0, 0, 0] == 40
    assert f"a{suffix}: 3 frames or pages (an animation or a multi-page file): only the first is read" in caplog.text


def test_notes_of_two_runs_in_threads_of_one_process_are_each_their_own(tmp_path: Path) -> None:
    """The notes on files read were collected module-wide: of two runs in threads of one process, the one that
    ended last said the other's notes too, and the other none."""
    from normalcy.images.io import read_notes

    Image.fromarray(np.full((2, 2), 4000.0, np.float32), mode="F").save(tmp_path / "b.tif")
    said: list[tuple[str, str]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append((threading.current_thread().name, record.getMessage()))

    a_started, b_ended = threading.Event(), threading.Event()

    def run_a() -> None:
        with read_notes():
            a_started.set()
            b_ended.wait(10)

    def run_b() -> None:
        a_started.wait(10)
        with read_notes():
            read_image(tmp_path / "b.tif")
        b_ended.set()

    handler = Handler()
    logging.getLogger("normalcy").addHandler(handler)
    try:
        threads = [threading.Thread(target=run_a, name="A"), threading.Thread(target=run_b, name="B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        logging.getLogger("normalcy").removeHandler(handler)
    assert [(who, "b.tif: float image" in text) for who, text in said] == [("B", True)]


def test_notes_on_files_read_are_one_line_a_kind_per_command(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    """A float TIFF's clipped values and an animation's frames were one warning a file, again each time the file
    was read: 10,000 such files gave 10,000 lines. A command (``read_notes``: fit, predict, eval, ...) says one
    line a kind, its first file's note, the count of the others and the first few of their names."""
    from normalcy.images.io import read_notes

    for i in range(12):
        big = np.array([[0.0, 100.0, 4095.0 + i]], dtype=np.float32)
        Image.fromarray(big, mode="F").save(tmp_path / f"f{i:02d}.tif")
    frames = [Image.fromarray(np.full((6, 8, 3), v, np.uint8)) for v in (40, 200)]
    for i in range(2):
        frames[0].save(tmp_path / f"g{i}.gif", save_all=True, append_images=frames[1:])
    files = sorted(tmp_path.iterdir())
    with caplog.at_level(logging.WARNING, logger="normalcy"), read_notes():
        with read_notes():  # eval fits: the outer command says them
            for p in files:
                read_image(p)
        assert caplog.records == []
        from normalcy.images.features import FeatureExtractor

        batches = FeatureExtractor(image_size=32).iter_batches(files[::-1], 32, pooled=False, features=False)
        assert sum(len(b.paths) for b in batches) == len(files)  # read again, by the readers' threads
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        (f"{tmp_path / 'f00.tif'}: float image: 1 of 3 values outside 0..255 (they span 0..4095) are clipped to it: "
         "scale the file to 0..1 or 0..255 (and 11 more file(s) likewise: f01.tif, f02.tif, f03.tif, ...)"),
        (f"{tmp_path / 'g0.gif'}: 2 frames or pages (an animation or a multi-page file): only the first is read "
         "(and 1 more file(s) likewise: g1.gif)")]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="normalcy"):  # outside a command: at once, as before
        read_image(files[0])
    assert len(caplog.records) == 1 and "likewise" not in caplog.text
    from normalcy.api import fit

    caplog.clear()
    (tmp_path / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="normalcy"), pytest.raises(InputError, match="readable"):
        fit([*files[:2], files[-1], *[tmp_path / "empty.png"] * 2], "gaussian", image_size=32,
            progress=False)  # said when the command fails too
    said = [r.getMessage() for r in caplog.records if "empty.png" not in r.getMessage()]  # skipped: said apart
    assert said == [lines[0].replace("11 more file(s) likewise: f01.tif, f02.tif, f03.tif, ...",
                                     "1 more file(s) likewise: f01.tif"),
                    (f"{tmp_path / 'g1.gif'}: 2 frames or pages (an animation or a multi-page file): only the first "
                     "is read")]


def test_read_bilevel(tmp_path: Path) -> None:
    im = Image.new("1", (4, 4), 1)
    im.save(tmp_path / "b.bmp")
    out = read_image(tmp_path / "b.bmp")
    _check_rgb(out, 4, 4)
    assert (out == 255).all()


def test_read_applies_exif_orientation(tmp_path: Path) -> None:
    im = Image.fromarray(_rgb(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees CW on display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (20, 10, 3)


def test_exif_orientation_of_pngs_and_in_header_sizes(tmp_path: Path) -> None:
    """A PNG's eXIf orientation was ignored by the fast path (an opaque PNG came out as stored, the same PNG with
    a transparent colour or read as a mask turned), and image_size, from which the input size takes its aspect
    ratio, gave every file's size as stored, not as read_image turns it."""
    pixels = _rgb(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("rot.png", "rot.jpg", "rot.webp", "rot.tif"):
        Image.fromarray(pixels).save(tmp_path / name, exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "plain.jpg")
    for name in ("rot.png", "rot.jpg", "rot.webp", "rot.tif", "plain.jpg"):
        out = read_image(tmp_path / name)
        assert out.shape == ((20, 10, 3) if name.startswith("rot") else (10, 20, 3)), name
        assert image_size(tmp_path / name) == (out.shape[1], out.shape[0]), name
    np.testing.assert_array_equal(read_image(tmp_path / "rot.png"), np.rot90(pixels, -1))
    exif[0x0112] = 1  # upright: still the fast path
    Image.fromarray(pixels).save(tmp_path / "upright.png", exif=exif.tobytes())
    import normalcy.images.io as data

    np.testing.assert_array_equal(data._read_plain(tmp_path / "upright.png"), pixels)


def test_an_orientation_in_xmp_only_is_ignored_by_every_reader(tmp_path: Path) -> None:
    """An XMP tiff:Orientation without an EXIF one: Pillow turned a CMYK JPEG, a transparent PNG, a WebP and a TIFF
    by it, the fast decoders read a plain JPEG or PNG as stored (so did the browser `serve` sends it to), and
    image_size said turned or not by file type. Every reader now takes EXIF (and TIFF tags) only; EXIF still wins
    where both are there."""
    from PIL import PngImagePlugin

    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    pixels = _rgb(10, 20)
    im = Image.fromarray(pixels)
    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", xmp.decode())
    im.save(tmp_path / "plain.jpg", xmp=xmp)
    im.convert("CMYK").save(tmp_path / "cmyk.jpg", xmp=xmp)
    im.save(tmp_path / "plain.png", pnginfo=text)
    im.convert("RGBA").save(tmp_path / "alpha.png", pnginfo=text)
    im.save(tmp_path / "x.webp", xmp=xmp, lossless=True)
    im.save(tmp_path / "x.tif", tiffinfo={700: xmp})
    for name in ("plain.jpg", "cmyk.jpg", "plain.png", "alpha.png", "x.webp", "x.tif"):
        assert read_image(tmp_path / name).shape == (10, 20, 3), name
        assert image_size(tmp_path / name) == (20, 10), name
    exif = Image.Exif()
    exif[0x0112] = 6
    im.convert("CMYK").save(tmp_path / "both.jpg", xmp=xmp.replace(b'"6"', b'"1"'), exif=exif.tobytes())
    assert read_image(tmp_path / "both.jpg").shape == image_size(tmp_path / "both.jpg")[::-1] + (3,) == (20, 10, 3)


def test_uncompressed_tiff_turned_a_quarter_is_read_turned_not_scrambled(tmp_path: Path) -> None:
    """Pillow decoded an uncompressed TIFF whose Orientation tag turns it a quarter into the turned frame, then
    turned it again: its pixels came out scrambled at the stored size (image_size gave the turned one)."""
    from PIL import TiffImagePlugin

    grey = (np.arange(10 * 20).reshape(10, 20) % 251).astype(np.uint8)
    turned = {5: grey.T, 6: np.rot90(grey, -1), 7: np.rot90(grey, 2).T, 8: np.rot90(grey, 1)}
    for orientation, expected in turned.items():
        for name, pixels in (("grey", grey), ("grey16", grey.astype(np.uint16) * 257), ("rgb", np.dstack([grey] * 3))):
            tags = TiffImagePlugin.ImageFileDirectory_v2()
            tags[0x0112] = orientation
            for compression in (None, "tiff_lzw"):
                path = tmp_path / f"{name}_{orientation}_{compression}.tif"
                Image.fromarray(pixels).save(path, tiffinfo=tags, compression=compression)
                out = read_image(path)
                np.testing.assert_array_equal(out[:, :, 0], expected, err_msg=path.name)
                assert image_size(path) == (10, 20), path.name


# ------------------------------------------------------------------ read_image errors


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError) as ei:
        read_image(p)
    assert ei.value.reason == "empty file (0 bytes)"
    assert ei.value.path == p
    assert str(ei.value) == f"{p}: empty file (0 bytes)"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as ei:
        read_image(p)
    assert ei.value.reason == "not an image (cannot identify format)"


def test_git_lfs_pointer_and_html_page_named_like_images_are_named_as_such(tmp_path: Path) -> None:
    """A data set cloned without Git LFS holds a short text pointer under each image's name, and a failed download
    an HTML page: each was "not an image (cannot identify format)", which says nothing of what to do."""
    (tmp_path / "000.png").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n")
    (tmp_path / "001.jpg").write_text("\n  <!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
    (tmp_path / "002.jpg").write_text("<HTML><body>Forbidden</body></HTML>")
    skipped: list[tuple[Path, str]] = []
    assert not list(iter_images(list_files(tmp_path), skipped))
    assert [why for _, why in skipped] == [
        "a Git LFS pointer, not the image itself: fetch the images with `git lfs pull`",
        "an HTML page (a failed download?), not an image", "an HTML page (a failed download?), not an image"]


@pytest.mark.parametrize("brand", [b"heic", b"mif1"])
def test_heic_photo_is_named_as_one(tmp_path: Path, brand: bytes) -> None:
    """An iPhone's HEIC photo was "not an image (cannot identify format)": wrong, and no hint what to do."""
    p = tmp_path / "IMG_0001.HEIC"
    p.write_bytes((24).to_bytes(4, "big") + b"ftyp" + brand + bytes(4) + b"mif1heic" + bytes(500))
    with pytest.raises(ImageError) as ei:
        read_image(p)
    assert ei.value.reason == "a HEIC/HEIF image, which normalcy cannot read: convert it to JPEG or PNG"


def test_appledouble_file_given_by_name_is_named_as_one(tmp_path: Path) -> None:
    """A folder's ._x.png (a Mac's metadata beside x.png) is hidden, but pathlib's glob('*.png') lists it."""
    Image.fromarray(_rgb()).save(tmp_path / "x.png")
    (tmp_path / "._x.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(200))
    assert list_files(tmp_path) == [tmp_path / "x.png"]
    skipped: list[tuple[Path, str]] = []
    assert [p for p, _ in iter_images(sorted(tmp_path.glob("*.png")), skipped)] == [tmp_path / "x.png"]
    assert skipped == [(tmp_path / "._x.png", "a macOS AppleDouble file (Finder metadata, not an image)")]


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_tiff_pillow_cannot_decode_is_named_as_one(tmp_path: Path, dtype: type) -> None:
    """A 64 or 16-bit float TIFF (or a float RGB one) was "not an image (cannot identify format)": it is a TIFF, of
    samples Pillow does not read, and the message says what to save instead."""
    imagecodecs = pytest.importorskip("imagecodecs")
    (tmp_path / "f.tif").write_bytes(imagecodecs.tiff_encode(np.full((5, 6), 0.5, dtype)))
    with pytest.raises(ImageError, match=r"f\.tif: a TIFF Pillow cannot decode \(float colour, .*\): save it as 8 "
                                         r"or 16-bit integer grey or RGB"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
@pytest.mark.parametrize("frac", [0.3, 0.7])
def test_truncated(tmp_path: Path, fmt: str, suffix: str, frac: float) -> None:
    full = tmp_path / f"full{suffix}"
    Image.fromarray(_rgb(64, 64)).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ImageError) as ei:
        read_image(cut)
    assert ei.value.reason == "truncated image data"
    # The global PIL switch must not have been flipped to hide truncation.
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_crc(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    Image.fromarray(_rgb()).save(p)
    data = bytearray(p.read_bytes())
    data[40:60] = bytes(20)  # overwrite the start of IDAT
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError) as ei:
        read_image(p)
    assert ei.value.reason.startswith(("corrupt image:", "truncated", "not an image"))
    assert "\n" not in ei.value.reason


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.png"
    with pytest.raises(ImageError) as ei:
        read_image(p)
    assert "not found" in ei.value.reason


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.png"
    d.mkdir()
    with pytest.raises(ImageError) as ei:
        read_image(d)
    assert "directory" in ei.value.reason


def test_image_error_is_picklable(tmp_path: Path) -> None:
    err = pickle.loads(pickle.dumps(ImageError(tmp_path / "a.png", "bad")))
    assert err.path == tmp_path / "a.png" and err.reason == "bad"
    assert str(err) == f"{tmp_path / 'a.png'}: bad"


def test_input_error_is_value_error() -> None:
    assert issubclass(InputError, ValueError)


# ------------------------------------------- decompression bombs and files that are not regular files


def _bomb_jpeg(path: Path, width: int, height: int) -> Path:
    """A real 8x8 JPEG of a few hundred bytes whose frame header (SOF0) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(_rgb(8, 8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.find(b"\xff\xc0")
    assert data[i + 2 : i + 5] == b"\x00\x11\x08"  # length 17 (3 components), 8-bit samples
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def _bomb_png(path: Path, width: int, height: int, bits: int = 8) -> Path:
    """A real 8x8 grey PNG whose IHDR (its CRC fixed) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8 if bits == 8 else np.uint16)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR" and data[24] == bits
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Headers claiming 30000x30000 (over twice Pillow's limit) or 10000x10000 (over it, under twice) are
    refused from the header on every decode path, as too large, before any decode would take 2.7 GB or 300 MB."""
    good = tmp_path / "good.png"
    Image.fromarray(_rgb()).save(good)
    bombs = [
        _bomb_jpeg(tmp_path / "huge.jpg", 30000, 30000),  # the imagecodecs JPEG path
        _bomb_jpeg(tmp_path / "big.jpg", 10000, 10000),
        _bomb_png(tmp_path / "huge.png", 30000, 30000),  # the imagecodecs PNG path
        _bomb_png(tmp_path / "big.png", 10000, 10000),
        _bomb_png(tmp_path / "big16.png", 10000, 10000, bits=16),  # 16 bits: the Pillow path
    ]
    assert all(b.stat().st_size < 1000 for b in bombs)
    skipped: list[tuple[Path, str]] = []
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        read = [p.name for p, _ in iter_images([*bombs, good], skipped)]
    assert read == ["good.png"]
    reasons = {p.name: reason for p, reason in skipped}
    assert sorted(reasons) == sorted(b.name for b in bombs)
    assert all(reason.startswith("image too large") for reason in reasons.values()), reasons
    assert "30000x30000" in reasons["huge.jpg"] and "10000x10000" in reasons["big16.png"]
    for b in bombs:
        assert b.name in caplog.text  # the skip is logged, naming the file


def test_pixel_limit_follows_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit is Pillow's ``Image.MAX_IMAGE_PIXELS``, refused from the limit on; None turns it off."""
    from normalcy.images.io import check_pixels, image_size

    p = tmp_path / "x.jpg"
    Image.fromarray(_rgb(20, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
    with pytest.raises(ImageError, match="image too large: 30x20 pixels"):
        read_image(p)
    with pytest.raises(ImageError, match="image too large"):
        image_size(p)
    check_pixels(p, 599, 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 601)
    assert read_image(p).shape == (20, 30, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    check_pixels(p, 10**6, 10**6)


def test_mask_bomb_is_refused(tmp_path: Path) -> None:
    mask = _bomb_png(tmp_path / "000_mask.png", 10000, 10000)
    with pytest.raises(ImageError, match="image too large: 10000x10000"):
        read_mask(mask, (8, 8))


@contextlib.contextmanager
def _unblocked(fifo: Path, after: float = 10.0) -> Iterator[list[bool]]:
    """If something still waits to read ``fifo`` after ``after`` s, open and close its writing end so that the
    reader gets EOF and the test fails instead of hanging; the list yielded says whether that was needed."""
    hung: list[bool] = []
    done = threading.Event()

    def release() -> None:
        while not done.wait(after):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                hung.append(True)
            except OSError:  # no reader (ENXIO): nothing waits on it
                pass

    t = threading.Thread(target=release, daemon=True)
    t.start()
    try:
        yield hung
    finally:
        done.set()
        t.join()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_skipped_not_waited_on(tmp_path: Path) -> None:
    from normalcy.images.features import size_for
    from normalcy.images.io import image_size

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with _unblocked(fifo) as hung:
        with pytest.raises(ImageError) as ei:
            read_image(fifo)
        assert ei.value.reason == "not a regular file (FIFO)"
        with pytest.raises(ImageError, match=r"not a regular file \(FIFO\)"):
            read_mask(fifo, (8, 8))
        with pytest.raises(ImageError, match=r"not a regular file \(FIFO\)"):
            image_size(fifo)
        assert size_for([fifo]) == (224, 224)  # --image-size auto reads headers: the FIFO is passed over
    assert not hung


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_special_files_in_a_folder_are_listed_and_skipped(tmp_path: Path) -> None:
    """A FIFO, a socket, a link to a FIFO or to /dev/zero in a folder is named and skipped, not dropped."""
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b_pipe.png")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "c_pipe.jpg")
    (tmp_path / "d_link.png").symlink_to(tmp_path / "b_pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "e.sock"))
    except OSError:  # a path too long for AF_UNIX: the other kinds still count
        sock.close()
        sock = None
    if Path("/dev/zero").exists():
        (tmp_path / "f_zero.png").symlink_to("/dev/zero")
    try:
        files = list_files(tmp_path)
        assert list_files(tmp_path, recursive=False) == [p for p in files if p.parent == tmp_path]
        skipped: list[tuple[Path, str]] = []
        with _unblocked(tmp_path / "b_pipe.png") as hung, _unblocked(tmp_path / "sub" / "c_pipe.jpg") as hung2:
            read = [p for p, _ in iter_images(files, skipped)]
        assert not hung and not hung2
    finally:
        if sock is not None:
            sock.close()
    assert read == [tmp_path / "a.png"]
    reasons = {p.name: r for p, r in skipped}
    expected = {"b_pipe.png": "not a regular file (FIFO)", "c_pipe.jpg": "not a regular file (FIFO)",
                "d_link.png": "not a regular file (FIFO)"}
    if sock is not None:
        expected["e.sock"] = "not a regular file (socket)"
    if Path("/dev/zero").exists():
        expected["f_zero.png"] = "not a regular file (character device)"
    assert reasons == expected


def test_broken_links_and_link_loops_in_a_folder_are_named_as_such(tmp_path: Path) -> None:
    """A link whose target is gone (a data set copied without it) was "file not found", though listed."""
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to("gone.png")
    (tmp_path / "c.png").symlink_to("d.png")
    (tmp_path / "d.png").symlink_to("c.png")
    skipped: list[tuple[Path, str]] = []
    assert [p.name for p, _ in iter_images(list_files(tmp_path), skipped)] == ["a.png"]
    reasons = {p.name: r for p, r in skipped}
    assert reasons.pop("b.png") == "broken symbolic link (its target is missing)"
    assert set(reasons) == {"c.png", "d.png"} and all(r.startswith("cannot read file: ") for r in reasons.values())


def test_a_folder_of_hidden_files_only_says_so(tmp_path: Path) -> None:
    """A folder holding only a Mac's ``._x.png`` files and ``.DS_Store`` was "no files in folder", though ``ls -a``
    lists files there: it says they are hidden, never inputs."""
    (tmp_path / "._x.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (tmp_path / ".DS_Store").write_bytes(bytes(8))
    with pytest.raises(InputError, match=r"no files in folder: \S+ \(it holds only hidden entries, never read as "
                                         r"inputs: \.DS_Store, \._x\.png\)$"):
        list_files(tmp_path)
    (tmp_path / "._x.png").unlink()
    (tmp_path / ".DS_Store").unlink()
    with pytest.raises(InputError, match=r"no files in folder: [^(]*$"):
        list_files(tmp_path)


def test_folder_links_back_up_are_left_out_and_named(tmp_path: Path, caplog) -> None:
    """A link to a folder holding the one listed was followed once: ``test/all -> .`` listed every test image
    again as a defect of its own (the good ones as defective: wrong metrics, unsaid), ``train/good/up -> ../..``
    the test images as training ones. Left out now, each named; a link to a folder elsewhere is still followed."""
    root = tmp_path / "ds"
    _make_tree(root)
    (root / "test" / "all").symlink_to(".")
    (root / "train" / "good" / "up").symlink_to("../..")
    elsewhere = tmp_path / "lot2"
    elsewhere.mkdir()
    Image.fromarray(_rgb(8, 8)).save(elsewhere / "100.png")
    (root / "train" / "good" / "lot2").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        ds = load_dataset(root)
    assert {s.defect for s in ds.test} == {"good", "scratch", "crack"} and len(ds.test) == 6
    assert sorted(str(p.relative_to(root / "train" / "good")) for p in ds.train) == [
        "000.png", "001.png", "002.png", "lot2/100.png", "readme.txt"]
    assert f"left out {root / 'test' / 'all'}: a symbolic link back to {root / 'test'}, which holds it" in caplog.text
    assert f"left out {root / 'train' / 'good' / 'up'}: a symbolic link back to {root}, which holds it" in caplog.text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_predict_skips_fifos_and_bombs_and_scores_the_rest(tmp_path: Path, synthetic_root: Path) -> None:
    """`normalcy predict` with a FIFO as an input and one in a folder, a link to /dev/zero and a JPEG bomb:
    it finishes, lists each of them in skipped.csv with its reason, and scores the rest."""
    from normalcy.detectors import create
    from normalcy.images.features import FeatureExtractor

    model = tmp_path / "model"
    create("gaussian", FeatureExtractor(image_size=64)).fit(list_files(synthetic_root / "train" / "good")).save(model)
    new = tmp_path / "new"
    new.mkdir()
    for p in sorted((synthetic_root / "test" / "good").iterdir())[:2]:
        (new / p.name).write_bytes(p.read_bytes())
    os.mkfifo(new / "pipe.png")
    _bomb_jpeg(new / "bomb.jpg", 30000, 30000)
    direct = tmp_path / "direct.png"
    os.mkfifo(direct)
    inputs = [new, direct]
    expected = {"pipe.png": "not a regular file (FIFO)", "direct.png": "not a regular file (FIFO)"}
    if Path("/dev/zero").exists():
        (tmp_path / "zero.png").symlink_to("/dev/zero")
        inputs.append(tmp_path / "zero.png")
        expected["zero.png"] = "not a regular file (character device)"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "normalcy.cli", "predict", str(model), *map(str, inputs), "-o", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    with open(out / "scores.csv", newline="") as fh:
        assert sorted(Path(row["path"]).name for row in csv.DictReader(fh)) == ["000.png", "001.png"]
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(fh)}
    assert skipped.pop("bomb.jpg").startswith("image too large: 30000x30000")
    assert skipped == expected


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_eval_compares_regular_files_only_with_training_images(synthetic_dataset: Path) -> None:
    """eval's look for test images copied into train/good compared files of one size, and a FIFO's size is 0, as
    an empty file's: it waited on the FIFO for ever (a link to /dev/zero filled memory) before the fit began."""
    from normalcy.evaluation.evaluate import training_copies

    (synthetic_dataset / "train" / "good" / "empty.png").write_bytes(b"")
    (synthetic_dataset / "test" / "good" / "empty.png").write_bytes(b"")
    os.mkfifo(synthetic_dataset / "test" / "good" / "pipe.png")
    with _unblocked(synthetic_dataset / "test" / "good" / "pipe.png", after=3.0) as hung:
        copies = training_copies(load_dataset(synthetic_dataset))
    assert not hung and copies == []


# ------------------------------------------------------------------------ iter_images


def test_iter_images_skips_and_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(_rgb(seed=i)).save(p)
        paths.append(p)
    bad = tmp_path / "1b.jpg"
    bad.write_text("nope")
    paths.insert(1, bad)

    skipped: list[tuple[Path, str]] = []
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        got = list(iter_images(paths, skipped))
    assert [p for p, _ in got] == [paths[0], paths[2], paths[3]]
    assert all(img.shape == (24, 32, 3) for _, img in got)
    assert skipped == [(bad, "not an image (cannot identify format)")]
    assert any("1b.jpg" in r.getMessage() and "not an image" in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------------- read_mask


def test_read_mask_threshold(tmp_path: Path) -> None:
    m = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    Image.fromarray(m).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", (1, 4))
    assert out.dtype == bool
    assert out.tolist() == [[False, False, True, True]]


def test_read_mask_none() -> None:
    out = read_mask(None, (5, 7))
    assert out.shape == (5, 7) and out.dtype == bool and not out.any()


def test_read_mask_resize_warns(tmp_path: Path) -> None:
    m = np.zeros((10, 20), dtype=np.uint8)
    m[:, 10:] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.warns(MaskSizeWarning, match=r"mask size 20x10 differs from image size 40x5; resized"):
        out = read_mask(tmp_path / "m.png", (5, 40))
    assert out.shape == (5, 40) and out.dtype == bool
    assert not out[:, :20].any() and out[:, 20:].all()
    assert issubclass(MaskSizeWarning, UserWarning)


def test_read_mask_same_size_no_warning(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    Image.new("L", (6, 4), 255).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", (4, 6)).all()
    assert not [w for w in recwarn if issubclass(w.category, MaskSizeWarning)]


def test_a_mask_at_its_exif_turned_images_stored_size_is_turned_alike(tmp_path: Path) -> None:
    """A phone's portrait photo (stored 20x10, EXIF orientation 6: read 10x20) whose mask was drawn on its stored
    pixels (20x10): the mask was stretched to 10x20, its defect out of place. It is turned as the image is, said
    once; a mask of the turned size, or of the stored size of an image that is not turned, is read as before."""
    from normalcy.images.io import MaskTurnedWarning

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb(10, 20)).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    Image.fromarray(_rgb(10, 20)).save(tmp_path / "upright.jpg")
    stored = np.zeros((10, 20), np.uint8)
    stored[:3, :5] = 255  # the stored top left corner: the top right once turned 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "m.png")
    expected = np.rot90(stored, -1) > 127
    with pytest.warns(MaskTurnedWarning, match=r"m\.png: mask size 20x10 is its image's size before the image's "
                                                r"EXIF orientation \(6\) turns it to 10x20; turned as the image is"):
        out = read_mask(tmp_path / "m.png", (20, 10), image=tmp_path / "photo.jpg")
    np.testing.assert_array_equal(out, expected)
    Image.fromarray(np.rot90(stored, -1)).save(tmp_path / "turned.png")
    with pytest.warns(MaskTurnedWarning):  # at the pixel metrics' size too
        np.testing.assert_array_equal(read_mask(tmp_path / "m.png", (20, 10), (10, 5), image=tmp_path / "photo.jpg"),
                                      read_mask(tmp_path / "turned.png", (20, 10), (10, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_mask(tmp_path / "turned.png", (20, 10), image=tmp_path / "photo.jpg"),
                                      expected)
    with pytest.warns(MaskSizeWarning, match="differs from image size"):  # not turned: resized, as before
        read_mask(tmp_path / "m.png", (20, 10), image=tmp_path / "upright.jpg")


def test_read_mask_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (3, 2), (255, 255, 255)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", (2, 3)).all()


def test_read_mask_in_colour_palette_labels_and_16_bits(tmp_path: Path) -> None:
    """A red-on-black mask, a palette mask (VOC's dark red), a mask of 0 and 1 and a 16-bit one of 0 and 1 were
    read as no defect at all (luminance under 128): pixel metrics went wrong or null without a word."""
    defect = np.zeros((2, 3), bool)
    defect[0, 1:] = True
    red = np.zeros((2, 3, 3), np.uint8)
    red[defect] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "red.png")
    pal = Image.fromarray(defect.astype(np.uint8), "L").convert("P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    Image.fromarray(defect.astype(np.uint8)).save(tmp_path / "01.png")
    Image.fromarray(defect.astype(np.uint16)).save(tmp_path / "01_16.png")
    Image.fromarray(defect.astype(np.uint16) * 65535).save(tmp_path / "16.png")
    for name in ("red", "pal", "01", "01_16", "16"):
        assert read_mask(tmp_path / f"{name}.png", (2, 3)).tolist() == defect.tolist(), name
    Image.new("L", (3, 2), 0).save(tmp_path / "zero.png")
    assert not read_mask(tmp_path / "zero.png", (2, 3)).any()


# ------------------------------------------------------------------------- list_files


def test_list_files_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError) as ei:
        list_files(tmp_path / "nope")
    assert "nope" in str(ei.value) and "\n" not in str(ei.value)


def test_list_files_empty(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError):
        list_files(tmp_path / "e")


def test_list_files_only_hidden(tmp_path: Path) -> None:
    d = tmp_path / "h"
    d.mkdir()
    (d / ".DS_Store").write_bytes(b"x")
    with pytest.raises(InputError):
        list_files(d)


def test_list_files_leaves_out_runs_below_the_folder(tmp_path: Path, caplog) -> None:
    """`predict model images -o images/run1`, then `-o images/run2` or `fit images`: run1's heatmaps and overlays
    were read as images of the folder (only the run being written was left out)."""
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    run = tmp_path / "run1"
    (run / "heatmaps").mkdir(parents=True)
    Image.fromarray(_rgb()).save(run / "heatmaps" / "a.png")
    (run / "run.json").write_text("{}")
    (run / "scores.csv").write_text("path,score\n")
    (tmp_path / "lot2").mkdir()
    (tmp_path / "lot2" / "run.json").write_text("{}")  # run.json alone: a user's file, kept
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert list_files(tmp_path) == [tmp_path / "a.png", tmp_path / "lot2" / "run.json"]
    assert f"left out {run}: a normalcy run" in caplog.text
    assert list_files(run) == [run / "heatmaps" / "a.png", run / "run.json", run / "scores.csv"]  # given: read


def test_list_files_not_a_dir(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(InputError):
        list_files(f)


def test_list_files_contents(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "a.txt").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "d.png").write_bytes(b"x")
    assert list_files(tmp_path) == [tmp_path / "a.txt", tmp_path / "b.png", tmp_path / "sub" / "c.jpg"]
    assert list_files(tmp_path, recursive=False) == [tmp_path / "a.txt", tmp_path / "b.png"]


def test_read_mask_with_alpha_is_composited_on_black(tmp_path: Path) -> None:
    """A white mask whose alpha draws the defect (RGBA or grey+alpha, as annotation tools export it) was read as
    defect everywhere: the colour under a transparent pixel counted. Transparent is unpainted, as read_image
    composites it."""
    defect = np.zeros((4, 5), bool)
    defect[1:3, 2:] = True
    alpha = defect.astype(np.uint8) * 255
    white = np.full((4, 5), 255, np.uint8)
    Image.fromarray(np.dstack([white, white, white, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([white, alpha]), "LA").save(tmp_path / "la.png")
    red = np.zeros((4, 5, 4), np.uint8)
    red[defect] = (255, 0, 0, 255)  # opaque red on transparent black: as before
    Image.fromarray(red, "RGBA").save(tmp_path / "red.png")
    for name in ("rgba", "la", "red"):
        assert read_mask(tmp_path / f"{name}.png", (4, 5)).tolist() == defect.tolist(), name


# ----------------------------------------------------------------------- load_dataset


def _make_tree(root: Path) -> None:
    def img(p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(8, 8)).save(p)

    for i in range(3):
        img(root / "train" / "good" / f"{i:03d}.png")
    (root / "train" / "good" / "readme.txt").write_text("not filtered")
    img(root / "test" / "good" / "000.png")
    img(root / "test" / "scratch" / "001.png")
    img(root / "test" / "scratch" / "000.png")
    img(root / "test" / "crack" / "000.png")
    img(root / "test" / "crack" / "001.png")
    img(root / "test" / "crack" / "002.png")
    gt = root / "ground_truth"
    img(gt / "scratch" / "000_mask.png")
    img(gt / "scratch" / "001_mask.png")
    img(gt / "crack" / "000.png")  # plain <stem>.png is accepted too
    img(gt / "crack" / "001_mask.png")
    # crack/002 has no mask


def test_load_dataset_synthetic(tmp_path: Path) -> None:
    root = tmp_path / "widget"
    _make_tree(root)
    ds = load_dataset(str(root))
    assert isinstance(ds, Dataset)
    assert ds.name == "widget" and ds.root == root
    assert len(ds.train) == 4 and ds.train[-1].name == "readme.txt"
    assert all(isinstance(s, Sample) for s in ds.test)
    assert [(s.defect, s.path.name, s.label) for s in ds.test] == [
        ("crack", "000.png", 1),
        ("crack", "001.png", 1),
        ("crack", "002.png", 1),
        ("good", "000.png", 0),
        ("scratch", "000.png", 1),
        ("scratch", "001.png", 1),
    ]
    masks = [s.mask_path for s in ds.test]
    gt = root / "ground_truth"
    assert masks == [
        gt / "crack" / "000.png",
        gt / "crack" / "001_mask.png",
        None,
        None,
        gt / "scratch" / "000_mask.png",
        gt / "scratch" / "001_mask.png",
    ]


def test_load_dataset_finds_loco_mask_folders_and_flat_masks_of_nested_images(tmp_path: Path, caplog) -> None:
    """A folder of masks per image (MVTec LOCO) and images sorted into subfolders with their masks in one
    folder were all "without a mask": pixel metrics null or on a part of the set, said only at INFO."""
    root = tmp_path / "ds"
    _make_tree(root)
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255
    loco = root / "ground_truth" / "crack" / "002"
    loco.mkdir()
    Image.fromarray(half).save(loco / "000.png")
    Image.fromarray(half.T.copy()).save(loco / "001.png")
    for sub, stem in (("a", "005"), ("a", "006"), ("b", "006")):
        (root / "test" / "scratch" / sub).mkdir(exist_ok=True)
        Image.fromarray(_rgb(8, 8)).save(root / "test" / "scratch" / sub / f"{stem}.png")
        Image.fromarray(half).save(root / "ground_truth" / "scratch" / f"{stem}.png")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        ds = load_dataset(root)
    masks = {str(s.path.relative_to(root / "test")): s.mask_path for s in ds.test}
    assert masks["crack/002.png"] == loco
    union = read_mask(loco, (8, 8))
    assert union[:4].all() and union[:, :4].all() and not union[4:, 4:].any()
    assert masks["scratch/a/005.png"] == root / "ground_truth" / "scratch" / "005.png"
    assert masks["scratch/a/006.png"] is None and masks["scratch/b/006.png"] is None  # whose would it be?
    assert "2 images (one name in several subfolders, or with several suffixes) share one mask file (e.g. " in \
        caplog.text and "006.png" in caplog.text
    (loco / "000.png").unlink()
    (loco / "001.png").unlink()
    with pytest.raises(ImageError, match="mask folder holds no image file"):
        read_mask(loco, (8, 8))


def test_load_dataset_finds_masks_of_every_image_suffix_png_first(tmp_path: Path, caplog) -> None:
    """Masks saved as BMP, TIFF, WebP or JPEG (any case) were "without a mask" (PNG only): pixel metrics null.
    Where a mask is there as PNG and as another type, the PNG is read (lossless; JPEG is the last choice)."""
    root = tmp_path / "ds"
    _make_tree(root)
    gt = root / "ground_truth"
    for m in [*(gt / "scratch").iterdir(), *(gt / "crack").iterdir()]:
        m.unlink()
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255
    names = {"scratch/000.png": "000_mask.bmp", "scratch/001.png": "001.TIFF", "crack/000.png": "000_mask.jpg",
             "crack/001.png": "001.webp", "crack/002.png": "002_mask.tif"}
    for name in names.values():
        folder = gt / ("scratch" if name[:3] in ("000", "001") and name.endswith(("bmp", "TIFF")) else "crack")
        Image.fromarray(half).save(folder / name, **({"lossless": True} if name.endswith("webp") else {}))
    Image.fromarray(half).save(gt / "crack" / "002_mask.PNG")  # PNG and TIFF: the PNG
    Image.fromarray(half).save(gt / "crack" / "001.jpeg")  # WebP and JPEG: the WebP
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        ds = load_dataset(root)
    found = {str(s.path.relative_to(root / "test")): s.mask_path for s in ds.test if s.label}
    names["crack/002.png"] = "002_mask.PNG"
    assert {k: m.name for k, m in found.items()} == names
    assert "no mask" not in caplog.text
    for s in ds.test:
        if s.label:
            assert read_mask(s.mask_path, (8, 8)).tolist() == (half > 0).tolist(), s.mask_path


def test_a_gif_mask_is_found_and_an_image_without_mask_is_named(tmp_path: Path, caplog) -> None:
    """GIF images are read, but a GIF mask (a GIF image's, say) was no mask at all, and eval said only "1 of 3
    images in test/crack have no mask", leaving the user to find which."""
    root = tmp_path / "ds"
    _make_tree(root)
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255
    Image.fromarray(half).save(root / "ground_truth" / "scratch" / "002_mask.gif")
    Image.fromarray(_rgb(8, 8)).save(root / "test" / "scratch" / "002.gif")
    (root / "test" / "scratch" / "Thumbs.db").write_bytes(bytes(64))  # no image: not one "without a mask"
    with caplog.at_level(logging.INFO, logger="normalcy"):
        ds = load_dataset(root)
    gif = next(s for s in ds.test if s.path.name == "002.gif")
    assert gif.mask_path == root / "ground_truth" / "scratch" / "002_mask.gif"
    assert read_mask(gif.mask_path, (8, 8)).tolist() == (half > 0).tolist()
    assert f"1 of 3 images in {root / 'test' / 'crack'} have no mask (e.g. 002.png)" in caplog.text
    assert "have no mask" not in caplog.text.replace(f"{root / 'test' / 'crack'} have no mask", "")


def test_read_mask_jpeg_thresholds_compression_noise(tmp_path: Path) -> None:
    """A JPEG mask is lossy: ringing around the defect and chroma bleed of a coloured mask stay on their side of
    the half-way cut of the brightest channel, and a black JPEG has no defect pixel."""
    defect = np.zeros((64, 64), bool)
    defect[20:40, 15:45] = True
    for colour in ((255, 255, 255), (255, 0, 0)):
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[defect] = colour
        for quality in (50, 75, 95):
            path = tmp_path / f"{colour[1]}_{quality}.jpg"
            Image.fromarray(rgb).save(path, quality=quality, subsampling=0)
            levels = np.asarray(Image.open(path).convert("RGB")).max(axis=2)
            assert ((levels > 0) & (levels < 255)).any()  # really lossy: levels between black and white
            assert read_mask(path, (64, 64)).tolist() == defect.tolist(), path.name
    Image.new("L", (64, 64), 0).save(tmp_path / "black.jpg")
    assert not read_mask(tmp_path / "black.jpg", (64, 64)).any()


def test_load_dataset_good_folders_in_any_case_and_mask_folders_with_other_files(tmp_path: Path) -> None:
    """test/Good (a Windows tool's spelling) was a defect class, its images labelled anomalous without a word,
    train/Good was "not found" and ground_truth/Crack's masks were not those of test/crack; a Thumbs.db beside a
    defect's masks in its MVTec LOCO folder cost the image its whole mask ("not an image"); an image named with
    é as e and an accent (macOS) missed its mask named with é."""
    root = tmp_path / "ds"
    _make_tree(root)
    (root / "test" / "good").rename(root / "test" / "Good")
    (root / "train" / "good").rename(root / "train" / "GOOD")
    (root / "ground_truth" / "crack").rename(root / "ground_truth" / "Crack")
    (root / "ground_truth").rename(root / "Ground_Truth")
    loco = root / "Ground_Truth" / "Crack" / "002"
    loco.mkdir()
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255
    Image.fromarray(half).save(loco / "000.png")
    (loco / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not a mask")
    nfd, nfc = "de\u0301faut", "d\u00e9faut"  # an image copied from a Mac, its mask written on Linux
    Image.fromarray(_rgb(8, 8)).save(root / "test" / "scratch" / f"{nfd}.png")
    Image.fromarray(half).save(root / "Ground_Truth" / "scratch" / f"{nfc}_mask.png")
    ds = load_dataset(root)
    assert [s.mask_path.name for s in ds.test if s.path.stem == nfd] == [f"{nfc}_mask.png"]
    assert len(ds.train) == 4 and ds.train[0].parent.name == "GOOD"
    assert [(s.path.parent.name, s.label) for s in ds.test if s.label == 0] == [("Good", 0)]
    assert [s.mask_path.name if s.mask_path else None for s in ds.test if s.defect == "crack"] == \
        ["000.png", "001_mask.png", "002"]
    assert read_mask(loco, (8, 8)).tolist() == (half > 0).tolist()


def test_load_dataset_annotation_files_beside_images_leave_them_their_masks(tmp_path: Path, caplog) -> None:
    """000.json beside 000.png (labelme; VOC writes 000.xml) shared its mask with the image, and every image of
    the defect was left without one (pixel metrics null), with a warning that said the masks were misnamed."""
    root = tmp_path / "ds"
    _make_tree(root)
    for name in ("000.json", "001.xml"):
        (root / "test" / "crack" / name).write_text("{}")
    with caplog.at_level(logging.INFO, logger="normalcy"):
        ds = load_dataset(root)
    masks = {s.path.name: s.mask_path.name if s.mask_path else None for s in ds.test if s.defect == "crack"}
    assert masks == {"000.png": "000.png", "001.png": "001_mask.png", "002.png": None, "000.json": None,
                     "001.xml": None}
    assert "share one mask" not in caplog.text


def test_load_dataset_warns_when_no_mask_name_matches(tmp_path: Path, caplog) -> None:
    """Masks named otherwise (``000_gt.png``) left every image of the defect without one, said at INFO."""
    root = tmp_path / "ds"
    _make_tree(root)
    for m in (root / "ground_truth" / "scratch").iterdir():
        m.rename(m.with_name(m.name.replace("_mask", "_gt")))
    with caplog.at_level(logging.INFO, logger="normalcy"):
        load_dataset(root)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{root / 'test' / 'scratch'}: no mask of its 2 images in {root / 'ground_truth' / 'scratch'}, "
                      "which holds files (e.g. 000_gt.png): masks are named <stem>_mask.png, <stem>.png (or .bmp, .tif, "
                      ".jpg, ...) or <stem>/ after their image"]
    assert "1 of 3 images in" in caplog.text  # crack/002 alone: still at INFO


def test_load_dataset_names_ground_truth_folders_no_test_folder_reads(tmp_path: Path, caplog) -> None:
    """ground_truth/good, ground_truth/<kind> without test/<kind> (a defect folder renamed) and masks directly in
    ground_truth/ were passed by without a word: they are never read. Named now; the other masks as before."""
    root = tmp_path / "ds"
    _make_tree(root)
    for name in ("good/000_mask.png", "dent/000_mask.png"):
        (root / "ground_truth" / name).parent.mkdir(parents=True)
        Image.fromarray(_rgb(8, 8)).save(root / "ground_truth" / name)
    (root / "ground_truth" / "empty").mkdir()
    Image.fromarray(_rgb(8, 8)).save(root / "ground_truth" / "002_mask.png")  # crack/002's, one folder too high
    (root / "ground_truth" / "readme.txt").write_text("not a mask")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        ds = load_dataset(root)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{root / 'ground_truth'}: 1 file(s) directly in it are not read (e.g. 002_mask.png): masks go "
                      "in ground_truth/<defect>/, named after their image in test/<defect>/",
                      f"{root / 'ground_truth' / 'dent'}: no test folder {root / 'test' / 'dent'} to pair its masks "
                      "with: they are not read (a defect folder named otherwise?)",
                      f"{root / 'ground_truth' / 'good'}: masks of good images are not read: a test/good image is "
                      "normal in every pixel"]
    assert sum(s.mask_path is not None for s in ds.test) == 4


def test_load_dataset_of_a_folder_of_data_sets_names_them(tmp_path: Path) -> None:
    """eval of a folder of MVTec AD categories said "training folder not found: DIR/train/good" and no more."""
    for name in ("bottle", "cable"):
        _make_tree(tmp_path / name)
    (tmp_path / "notes").mkdir()
    with pytest.raises(InputError, match=r"holds 2 data set\(s\) in MVTec AD layout \(bottle, cable\), not one: "
                       "give each on its own"):
        load_dataset(tmp_path)


def test_load_dataset_missing_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere"):
        load_dataset(tmp_path / "nothere")


def test_load_dataset_missing_train(tmp_path: Path) -> None:
    (tmp_path / "test" / "good").mkdir(parents=True)
    (tmp_path / "test" / "good" / "a.png").write_bytes(b"x")
    with pytest.raises(InputError, match="train"):
        load_dataset(tmp_path)


def test_load_dataset_given_its_training_folder_names_the_root(tmp_path: Path) -> None:
    """eval of DATASET/train/good said "training folder not found: DATASET/train/good/train/good"."""
    _make_tree(tmp_path / "ds")
    for inner in ("train/good", "train", "test"):
        with pytest.raises(InputError, match=f"is inside the data set {tmp_path / 'ds'}: give that folder"):
            load_dataset(tmp_path / "ds" / inner)
    with pytest.raises(InputError, match=r"holds 1 data set\(s\) in MVTec AD layout \(ds\)"):
        load_dataset(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="expected MVTec AD layout"):
        load_dataset(tmp_path / "other")


def test_load_dataset_empty_train(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(InputError, match="train"):
        load_dataset(tmp_path)


def test_load_dataset_missing_or_empty_test(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    (tmp_path / "train" / "good" / "a.png").write_bytes(b"x")
    with pytest.raises(InputError, match="test"):
        load_dataset(tmp_path)
    (tmp_path / "test" / "good").mkdir(parents=True)
    with pytest.raises(InputError, match="test") as ei:
        load_dataset(tmp_path)
    assert "\n" not in str(ei.value)


# -------------------------------------------------------------------------- real data


def _real(name: str) -> Path:
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"real data not available: {root}")
    return root


def test_real_hazelnut_toy() -> None:
    ds = load_dataset(_real("hazelnut_toy"))
    assert ds.name == "hazelnut_toy"
    assert len(ds.train) == 28
    assert len(ds.test) == 23
    anomalous = [s for s in ds.test if s.label == 1]
    assert len(anomalous) == 17
    assert all(s.defect == "colour" and s.mask_path is not None for s in anomalous)
    s = anomalous[0]
    img = read_image(s.path)
    assert img.shape == (512, 512, 3)
    mask = read_mask(s.mask_path, img.shape[:2])
    assert mask.shape == (512, 512) and mask.any()


def test_real_magnetic_tile() -> None:
    ds = load_dataset(_real("magnetic_tile"))
    assert len(ds.train) == 619
    assert len(ds.test) == 725
    counts: dict[str, int] = {}
    for s in ds.test:
        counts[s.defect] = counts.get(s.defect, 0) + 1
    assert counts == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "good": 333, "uneven": 103}
    assert sum(s.label for s in ds.test) == 725 - 333
    assert all(s.mask_path is not None for s in ds.test if s.label == 1)
    crack = next(s for s in ds.test if s.defect == "crack")
    img = read_image(crack.path)
    assert img.ndim == 3 and img.shape[2] == 3
    assert (img[..., 0] == img[..., 1]).all()  # grayscale source
    assert read_mask(crack.mask_path, img.shape[:2]).shape == img.shape[:2]
