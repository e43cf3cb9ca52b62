"""Reading images, masks and MVTec-AD-style data sets.

Everything here is defensive on purpose: industrial image folders are full of
odd files (16-bit TIFFs, palette PNGs, half-copied JPEGs, stray ``Thumbs.db``).
A file that cannot be read is *named and skipped*, never silently ignored and
never allowed to crash a long run.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import unicodedata
import warnings
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from normalcy.errors import ImageError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "Dataset",
    "ImageError",
    "InputError",
    "MaskSizeWarning",
    "MaskTurnedWarning",
    "Sample",
    "check_pixels",
    "image_size",
    "is_animated",
    "is_dataset",
    "iter_images",
    "list_files",
    "printable",
    "load_dataset",
    "mask_peak",
    "read_image",
    "read_mask",
    "notes_once",
    "read_notes",
    "skips_listed",
]

logger = logging.getLogger("normalcy")

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
"""Suffixes (lowercase) that look like images; compare with ``p.suffix.lower()``. GIF too: its images are read
(their first frame), and a GIF mask was no mask at all ("without a mask")."""


class MaskSizeWarning(UserWarning):
    """A ground-truth mask did not match its image's size and was resized."""


class MaskTurnedWarning(UserWarning):
    """A ground-truth mask had its image's size as stored, before its EXIF orientation turned it: turned alike."""


# --------------------------------------------------------------------------- files


def printable(text: str) -> str:
    """Text for people: a byte of a non-UTF-8 file name (surrogate-escaped) shows as U+FFFD instead of failing
    to encode in a page, a database or a terminal."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_files(folder: Path, recursive: bool) -> list[Path]:
    """Every non-hidden entry under ``folder`` that is not a folder (no errors for emptiness).

    Broken symlinks, FIFOs, sockets and devices are kept, not dropped: reading them fails, and that
    way they are named in the skipped list instead of vanishing unnoticed.
    """
    found: list[Path] = []
    if not recursive:
        for entry in folder.iterdir():
            if not _is_hidden(entry.name) and not entry.is_dir():
                found.append(entry)
        return sorted(found)

    seen_dirs: set[str] = set()
    top = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a link to a folder already listed (a loop within the folder, or a second link)
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames
                       if not _is_hidden(d) and not _is_run(base / d) and not _leads_back(base / d, top)]
        found.extend(base / name for name in filenames if not _is_hidden(name))  # os.walk lists folders apart
    return sorted(found)


def _leads_back(folder: Path, top: str) -> bool:
    """Whether ``folder`` (a link) leads back to ``top`` (a real path), the folder being listed, or to a folder
    holding it: a symbolic link loop, said in a warning. Followed, ``test/all -> .`` listed every test image again
    as a defect of its own (good ones as defective), and ``train/good/up -> ../..`` the test images as training."""
    real = os.path.realpath(folder)
    if top != real and not top.startswith(real.rstrip(os.sep) + os.sep):
        return False
    logger.warning("left out %s: a symbolic link back to %s, which holds it (a loop)", printable(str(folder)),
                   printable(real))
    return True


def _is_run(folder: Path) -> bool:
    """Whether ``folder`` (below the one given) is a run that `predict` wrote, said in a warning: its heatmaps and
    overlays were read as images of the folder (a fit learned them as normal, a predict scored them)."""
    if not ((folder / "run.json").is_file() and (folder / "scores.csv").is_file()):
        return False
    logger.warning("left out %s: a normalcy run (run.json, scores.csv), whose heatmaps are not inputs", folder)
    return True


def list_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Every non-hidden file under ``folder``, sorted.

    Deliberately *not* filtered by suffix or file type: a non-image file, a
    FIFO or a device in an image folder should be named and skipped by
    :func:`iter_images`, not vanish unnoticed.
    Hidden files and hidden directories (``.DS_Store``, ``.ipynb_checkpoints``)
    are skipped because they are never data, and so are run folders below ``folder``
    (:func:`_is_run`), named in a warning.

    Raises:
        InputError: the folder does not exist, is not a directory, or holds no files.
    """
    p = Path(folder)
    if not p.exists():
        raise InputError(f"folder not found: {p}")
    if not p.is_dir():
        raise InputError(f"not a folder: {p}")
    try:
        files = _walk_files(p, recursive)
    except OSError as err:
        raise InputError(f"cannot read folder {p}: {err.strerror or err}") from err
    if not files:
        raise InputError(f"no files in folder: {p}{_only_hidden(p)}")
    return files


def _only_hidden(folder: Path) -> str:
    """What a folder with nothing to list holds that is hidden, for its error: "no files in folder" of a folder
    where ``ls -a`` shows files (a Mac's ``._x.png`` copies, ``.DS_Store``) read as a wrong path."""
    try:
        hidden = sorted(e.name for e in folder.iterdir() if _is_hidden(e.name))
    except OSError:
        return ""
    if not hidden:
        return ""
    names = ", ".join(printable(n) for n in hidden[:3]) + (", ..." if len(hidden) > 3 else "")
    return f" (it holds only hidden entries, never read as inputs: {names})"


def input_paths(inputs: Sequence[Path]) -> list[Path]:
    """The files that command-line inputs name: each folder's images (``list_files``), each file as it is."""
    paths: list[Path] = []
    for p in inputs:
        paths.extend(list_files(p) if p.is_dir() else [p])
    return paths


# -------------------------------------------------------------------------- images


def _to_rgb_array(im: Image.Image, path: Path | None = None) -> np.ndarray:
    """Convert an already-loaded PIL image of any mode to HxWx3 uint8 RGB. Values of 32-bit integer and float
    images outside the range they are read on (0..65535; 0..1, else 0..255) are clipped, and NaN and inf read as
    0: both said in a warning naming ``path`` (a float TIFF of 0..4095 or -1..1 came out white or black, silently),
    and so is a float image read on 0..255 whose values stay under 2 (0..1 data a little past 1: black)."""
    if im.mode == "La":  # premultiplied; PIL only converts La via LA
        im = im.convert("LA")
    mode = im.mode

    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(im).astype(np.float64)
        gray = np.round(a / 257.0).astype(np.uint8)
    elif mode == "I":
        raw = np.asarray(im).astype(np.float64)
        _warn_clipped(path, raw, 0, 65535, "32-bit integer")
        gray = np.round(np.clip(raw, 0, 65535) / 257.0).astype(np.uint8)
    elif mode == "F":
        raw = np.asarray(im).astype(np.float64)
        a = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0
        _warn_clipped(path, raw, 0, top, "float")
        if path is not None and top == 255.0 and a.size and a.max() < 2.0:  # 0..1 data a little past 1 came out black, unsaid
            _note("float dark", path, f"float image of values up to {a.max():g}, over 1 so read on 0..255: it is "
                  "nearly black; scale the file to 0..1 if that is its range")
        a = np.clip(a, 0.0, 1.0) * 255.0 if top == 1.0 else np.clip(a, 0.0, 255.0)
        gray = np.round(a).astype(np.uint8)
    else:
        gray = None
    if gray is not None and mode != "F" and isinstance(im.info.get("transparency"), int):
        # a 16-bit grey PNG's transparent level (tRNS): on black, as an 8-bit one's is (it kept its grey)
        gray[np.asarray(im) == im.info["transparency"]] = 0

    if gray is not None:
        return _grey_to_rgb(gray)

    if mode == "RGB" and "transparency" not in im.info:  # an RGB PNG's transparent colour (tRNS) is kept below
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))

    # Anything with (possible) transparency: composite on black, so fully
    # transparent pixels carry no arbitrary hidden colour.
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode == "P" and "transparency" in im.info
    ) or (mode in ("L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return np.ascontiguousarray(np.round(rgb).astype(np.uint8))

    if mode == "L":
        return _grey_to_rgb(np.asarray(im, dtype=np.uint8))

    # P without transparency, 1, CMYK, YCbCr, HSV, ...
    try:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (ValueError, OSError) as err:
        raise ValueError(f"unsupported image mode {mode}") from err


def _warn_clipped(path: Path | None, raw: np.ndarray, low: float, high: float, kind: str) -> None:
    """Name a file whose pixel values fall outside ``low..high`` (clipped) or are not finite (read as 0)."""
    finite = raw[np.isfinite(raw)]
    bad = raw.size - finite.size
    out = int(((finite < low) | (finite > high)).sum())
    if path is None or not (bad or out):
        return
    scale = "0..1 or 0..255" if kind == "float" else "0..65535"
    what = [f"{out} of {raw.size} values outside {low:g}..{high:g} (they span {finite.min():g}..{finite.max():g}) "
            f"are clipped to it: scale the file to {scale}" if out else "",
            f"{bad} NaN or infinite values read as 0" if bad else ""]
    _note(f"{kind} values", path, f"{kind} image: " + "; ".join(w for w in what if w))


_notes_lock = threading.Lock()
_notes: ContextVar[dict[str, dict[str, str]] | None] = ContextVar("normalcy_read_notes", default=None)
"""While :func:`read_notes` collects: per kind of note, each file's note (by its path). A context variable, as
:func:`skips_listed`'s: module-level, two runs in threads of one process shared it, and one run's notes were
said by the other, when it ended. Reader threads take their caller's context (:func:`in_context`)."""


def in_context(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` run, in whatever thread calls it, in a copy of the calling thread's context as it is now: a reader
    thread's notes then go to the run that started it."""
    context = copy_context()
    return lambda arg: context.copy().run(fn, arg)


_skips_listed: ContextVar[bool] = ContextVar("normalcy_skips_listed", default=False)


@contextmanager
def skips_listed() -> Iterator[None]:
    """Within it, the caller lists the files skipped itself (the command line does), so :func:`read_notes` leaves
    them out of its lines: each was said twice."""
    token = _skips_listed.set(True)
    try:
        yield
    finally:
        _skips_listed.reset(token)


_MORE = {"skipped": "skipped", "skipped, unlisted": "skipped"}
"""How the summary line of a kind counts the files after the first (by default "likewise")."""


def _note(kind: str, path: Path, text: str) -> None:
    """Say ``path: text`` of a file read all the same (values clipped, frames left out) or skipped: at once
    outside :func:`read_notes`, else once a file, summed up by kind when the command ends."""
    notes = _notes.get()
    if notes is not None:
        with _notes_lock:
            notes.setdefault(kind, {}).setdefault(str(path), text)
        return
    logger.warning("%s: %s", printable(str(path)), text)


@contextmanager
def read_notes() -> Iterator[None]:
    """Collect what reading images says of files it reads all the same (a float TIFF's values clipped, an
    animation's frames left out) and say it when the block ends: one line a kind, its first file's note, how
    many more files had one and the first few names (10,000 float TIFFs gave 10,000 lines, once more each time a
    file was read again). Nested (``eval`` fits), the outermost block says them. A decorator too."""
    if _notes.get() is not None:  # nested: the outermost block says them
        yield
        return
    notes: dict[str, dict[str, str]] = {}
    token = _notes.set(notes)
    failed = True  # a command that fails lists no skipped file: they are said here then
    try:
        yield
        failed = False
    finally:
        _notes.reset(token)
        for kind, by_file in list(notes.items()):
            if kind == "skipped" and _skips_listed.get() and not failed:
                continue
            files = sorted(by_file)  # readers run in threads: the first as listed, not as decoded
            more = files[1:]
            names = ", ".join(printable(Path(f).name) for f in more[:3]) + (", ..." if len(more) > 3 else "")
            logger.warning("%s: %s%s", printable(files[0]), by_file[files[0]],
                           f" (and {len(more)} more file(s) {_MORE.get(kind, 'likewise')}: {names})" if more else "")


@contextmanager
def notes_once(said: set[tuple[str, str]]) -> Iterator[None]:
    """Say what reading images says of a file (frames left out, values clipped) once per ``said``, the (kind,
    path) said already, however often the file is read within such blocks: serve reads a multi-page TIFF or an
    animated GIF again at each request, and logged "only the first is read" at each. Within :func:`read_notes`,
    that block says them."""
    if _notes.get() is not None:
        yield
        return
    notes: dict[str, dict[str, str]] = {}
    token = _notes.set(notes)
    try:
        yield
    finally:
        _notes.reset(token)
        with _notes_lock:  # requests run in threads: two reads of one file say it once
            new = [(kind, f, text) for kind, by_file in notes.items() for f, text in by_file.items()
                   if (kind, f) not in said]
            said.update((kind, f) for kind, f, _ in new)
        for _, f, text in new:
            logger.warning("%s: %s", printable(f), text)


_FILE_TYPES = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
               stat.S_IFBLK: "block device"}


def _check_file(p: Path) -> None:
    """Refuse, before anything opens it, what is not a non-empty regular file (symlinks followed).

    Opening a FIFO waits for a writer forever and a device such as /dev/zero never ends, so either
    would hang or exhaust a run that only meant to read one image.
    """
    try:
        st = p.stat()
    except FileNotFoundError:  # a link whose target is gone was "file not found", though `ls` lists it
        raise ImageError(p, "broken symbolic link (its target is missing)" if p.is_symlink() else "file not found"
                         ) from None
    except OSError as err:
        raise ImageError(p, f"cannot read file: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(p, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(p, f"not a regular file ({_FILE_TYPES.get(stat.S_IFMT(st.st_mode), 'unknown type')})")
    if st.st_size == 0:
        raise ImageError(p, "empty file (0 bytes)")


def check_pixels(path: Path | str, width: int, height: int) -> None:
    """Refuse an image whose header claims ``Image.MAX_IMAGE_PIXELS`` pixels or more, before decoding it.

    A few hundred bytes can claim 30000x30000 pixels: decoding would take gigabytes. Pillow's own limit
    is used (``None`` turns it off, as in Pillow), but refused from the limit on rather than only
    warned about below twice the limit as Pillow does, because nothing that large is a part photo.

    Raises:
        ImageError: the image is too large.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height >= limit:
        raise ImageError(path, f"image too large: {width}x{height} pixels, decompression-bomb limit "
                               f"{limit} (PIL.Image.MAX_IMAGE_PIXELS)")


@contextmanager
def _pillow(p: Path) -> Iterator[Image.Image]:
    """``p`` opened lazily by Pillow (only its header read), checked by :func:`_check_file` and
    :func:`check_pixels`; any failure, here or in the ``with`` block, becomes one ImageError."""
    _check_file(p)
    try:
        with Image.open(p) as im:
            check_pixels(p, *im.size)
            yield im
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(p, _unidentified(p)) from None
    except FileNotFoundError:
        raise ImageError(p, "file not found") from None
    except IsADirectoryError:
        raise ImageError(p, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except Image.DecompressionBombError:  # Pillow's own refusal, at twice the limit, in Image.open
        raise ImageError(p, f"image too large: over twice the decompression-bomb limit "
                            f"{Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except MemoryError:
        raise ImageError(p, "image too large (out of memory)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            KeyError, struct.error) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        low = msg.lower()
        if isinstance(err, EOFError) or "truncated" in low or "premature end" in low:
            raise ImageError(p, "truncated image data") from None
        raise ImageError(p, f"corrupt image: {_short(msg)}") from None


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"})


def _unidentified(p: Path) -> str:
    """Why Pillow could not identify ``p``: a HEIC/HEIF photo (an iPhone's own format) is named as one, since
    "not an image" is wrong for it and says nothing of what to do; so are a Mac's ``._name`` metadata file, a
    TIFF whose samples Pillow does not read (a float RGB TIFF), a Git LFS pointer (a data set cloned without its
    images) and an HTML page saved under an image's name (a download that failed)."""
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError:
        head = b""
    if head.startswith(b"version https://git-lfs"):  # a data set cloned without Git LFS: every image was "not one"
        return "a Git LFS pointer, not the image itself: fetch the images with `git lfs pull`"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?), not an image"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIC/HEIF image, which normalcy cannot read: convert it to JPEG or PNG"
    if head[:4] == b"\x00\x05\x16\x07":  # ._name beside each file copied from a Mac (pathlib's glob lists them)
        return "a macOS AppleDouble file (Finder metadata, not an image)"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # "not an image" for a float RGB TIFF
        return ("a TIFF Pillow cannot decode (float colour, 64 or 16-bit float samples, an unusual compression, or "
                "a damaged file): save it as 8 or 16-bit integer grey or RGB")
    return "not an image (cannot identify format)"


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header alone, without decoding it: as :func:`read_image` gives the image,
    turned by its EXIF orientation (a phone's portrait photo, stored landscape, gave a landscape input size).

    Raises:
        ImageError: as :func:`read_image` would, for a file that is not a readable image of
            acceptable size (so a FIFO is refused instead of waited on).
    """
    with _pillow(Path(path)) as im:
        w, h = im.size
        return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)


def is_animated(path: str | Path) -> bool:
    """Whether an image file holds frames past the first, which :func:`read_image` alone reads (an animated GIF,
    PNG or WebP; not a JPEG's MPO preview): shown as the file, a browser plays frames that were never scored."""
    try:
        with _pillow(Path(path)) as im:
            return bool(getattr(im, "is_animated", False)) and im.format != "MPO"
    except ImageError:
        return False


def _orientation(im: Image.Image) -> int | None:
    """The EXIF orientation still to apply to an opened image, from its header (a PNG's eXIf after the pixels is
    not read: that would decode them); None where there is none or it cannot be read (read_image ignores it then
    too), and for a TIFF, whose size Pillow gives turned already."""
    if im.format == "TIFF" or (im.format == "PNG" and "exif" not in im.info):
        return None
    return exif_orientation(im)


_XMP_KEYS = ("xmp", "XML:com.adobe.xmp")
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def exif_orientation(im: Image.Image) -> int | None:
    """The orientation an opened image's EXIF (or TIFF tags) gives; None where there is none or it cannot be read.

    Never an XMP ``tiff:Orientation`` alone: Pillow's getexif() takes one where EXIF has none, so a file whose
    only orientation was in its XMP was read turned by Pillow (a CMYK JPEG, a transparent PNG, a WebP, a TIFF)
    and as stored by the fast decoders (a plain JPEG or PNG), its size said turned or not by file type, and shown
    as stored by the browser (which reads EXIF only). Every reader here asks this one helper.
    """
    hidden = {k: im.info.pop(k) for k in _XMP_KEYS if k in im.info}
    try:
        return im.getexif().get(0x0112)
    except Exception:  # malformed EXIF must not cost us the image
        return None
    finally:
        im.info.update(hidden)


def _open_loaded(p: Path) -> Image.Image:
    """Open and fully decode ``p``, translating every failure into ImageError.

    ``.load()`` is called explicitly so that truncated data raises here rather
    than later; ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left untouched.
    """
    with _pillow(p) as im:
        _untangle_turned_tiff(im)
        for key in _XMP_KEYS:  # Pillow's TIFF load turns the image by an XMP orientation too (exif_orientation)
            im.info.pop(key, None)
        im.load()
        frames = getattr(im, "n_frames", 1)
        # an animated GIF, PNG or WebP, or a multi-page TIFF: the first frame was taken silently (a phone's JPEG with
        # a second, preview picture, MPO, is one photo)
        if frames > 1 and im.format != "MPO":
            _note("frames", p, f"{frames} frames or pages (an animation or a multi-page file): only the first is read")
        if im.format == "PNG" and im.mode == "RGB" and isinstance(im.info.get("transparency"), tuple):
            im = _keyed_48_bit(p, im)
        method = _TRANSPOSE.get(exif_orientation(im))  # type: ignore[arg-type]
        return im.copy() if method is None else im.transpose(method)


def _untangle_turned_tiff(im: Image.Image) -> None:
    """Give an uncompressed TIFF whose Orientation tag turns it a quarter (5 to 8) its stored size back before
    Pillow decodes it. Pillow (13) sets such a file's size turned already when it opens it, then decodes the
    stored rows into that turned frame and turns the result again: its pixels came out scrambled, at the
    stored size, without a word (compressed TIFFs, decoded by libtiff, are right). Decoded at its stored size,
    Pillow's own turn on loading is right. Private attributes: Pillow has no public way to set a size."""
    if im.format != "TIFF" or not im.tile or any(t[0] != "raw" for t in im.tile):
        return
    if getattr(im, "tag_v2", {}).get(0x0112) not in (5, 6, 7, 8):
        return
    stored = max(t[1][2] for t in im.tile), max(t[1][3] for t in im.tile)  # the strips' extents (x0, y0, x1, y1)
    if im.size != stored and im.size == stored[::-1]:  # (a square one decodes right)
        im._size = stored


_PNG = b"\x89PNG\r\n\x1a\n"


def _keyed_48_bit(p: Path, im: Image.Image) -> Image.Image:
    """A 48-bit RGB PNG (``im``, which Pillow reads at 8 bits) with its transparent colour (tRNS) as alpha, else
    ``im``: Pillow compares the 16-bit colour with the 8-bit pixels, so it was never transparent (an 8-bit PNG's
    reads black). The colour is matched on the 16-bit pixels, decoded again by imagecodecs."""
    try:
        with open(p, "rb") as f:
            data = f.read()
        if data[24] != 16:
            return im
        raw = imagecodecs.png_decode(data)
    except Exception:  # OSError, imagecodecs' PngError: read as Pillow reads it
        return im
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[:2] != (im.height, im.width) or raw.shape[2] < 3:
        return im
    key = np.array(im.info["transparency"], np.uint16)
    alpha = np.where((raw[:, :, :3] == key).all(axis=2), np.uint8(0), np.uint8(255))  # (libpng adds its own)
    out = im.copy()
    out.info.pop("transparency", None)
    out.putalpha(Image.fromarray(alpha))  # RGB to RGBA
    return out


def _read_plain(p: Path) -> np.ndarray | None:
    """An 8-bit grey or RGB PNG without transparency or EXIF, or a grey or colour JPEG without EXIF, decoded by
    imagecodecs; None for anything else.

    Decoding is most of the reading time, and imagecodecs' builds are the fastest decoders we have: one
    1600x800 PNG takes 34 ms with Pillow, 23 with OpenCV and 17 with its libpng (zlib-ng inside)
    (``bench/png_decoders.py``); a 275x330 magnetic_tile JPEG 0.80 ms through Pillow and 0.35 with its
    libjpeg-turbo. PNGs go to its libspng, about as fast as its libpng (the same bench, best of 12 rounds on a
    busy 2-core machine: 36 against 37 ms, medians 62 against 49) and silent: libpng (imagecodecs' and
    OpenCV's) prints a line on stderr for each file with an odd ancillary chunk ("PNG warning: iCCP: profile
    ...: RGB color space not permitted on grayscale PNG", "sBIT: invalid", ...), thousands on a large run.
    The pixels are the same (PNG is lossless and none of them applies gamma or colour profiles; both JPEG
    paths are libjpeg-turbo's default decoder: tests/test_data.py compares them). Every other file (EXIF
    orientation, CMYK, 16 bits, transparency), and any file it cannot decode (truncated, corrupt), goes the
    Pillow way, which names the problem. A file whose header claims too many pixels is
    refused (:func:`check_pixels`) before anything decodes it.
    """
    try:
        with open(p, "rb") as f:
            head = f.read(33)
            if head[:8] == _PNG:
                size = _plain_png_size(head)
                if size is None:
                    return None
                check_pixels(p, *size)
                data = head + f.read()
                before = data[: data.find(b"IDAT")]
                if b"tRNS" in before:  # a transparent colour: composited on black the Pillow way
                    return None
                if b"acTL" in before:  # an animated PNG: Pillow's way names it as one (its first frame is read)
                    return None
                if _png_turned(data):  # Pillow applies it (it was ignored here: the same file with transparency,
                    return None  # or read as a mask, came out turned)
                decode = imagecodecs.spng_decode
            elif head[:3] == b"\xff\xd8\xff":
                data = head + f.read()
                size = _plain_jpeg_size(data)
                if size is None:
                    return None
                check_pixels(p, *size)
                decode = imagecodecs.jpeg8_decode
            else:
                return None
    except OSError:
        return None
    try:
        arr = decode(data)
    except Exception:  # imagecodecs.SpngError, JpegError and kin: Pillow names the problem
        return None
    if arr.dtype != np.uint8:
        return None
    if arr.ndim == 2:
        return _grey_to_rgb(arr)
    return arr if arr.ndim == 3 and arr.shape[2] == 3 else None


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """An HxW uint8 grey image as HxWx3 RGB, the same value in each channel. OpenCV's copy, not ``np.repeat``'s:
    0.14 against 0.31 ms for a 373x248 magnetic_tile image, which takes 0.47 ms to decode (an empty array, which
    OpenCV refuses, is repeated)."""
    if not grey.size:
        return np.repeat(grey[:, :, None], 3, axis=2)
    return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)


def _png_turned(data: bytes) -> bool:
    """Whether a PNG's eXIf chunk (if any) holds an orientation other than 1 (or cannot be read: Pillow decides)."""
    i = data.find(b"eXIf")
    if i < 4:
        return False
    try:
        exif = Image.Exif()
        exif.load(data[i + 4 : i + 4 + int.from_bytes(data[i - 4 : i], "big")])
        return exif.get(0x0112, 1) != 1
    except Exception:  # malformed EXIF
        return True


def _plain_png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR of an 8-bit grey or RGB PNG; None for any other file."""
    if len(head) < 33 or head[12:16] != b"IHDR" or head[24] != 8 or head[25] not in (0, 2):
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# Start-of-frame markers: SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the frame header of a JPEG that ends where it should (libjpeg-turbo fills a
    truncated one with grey; Pillow says it is truncated) and whose segments before the scan carry no EXIF
    (which may rotate it: Pillow applies that) and no Adobe marker (CMYK and YCCK files carry one); None
    for any other file."""
    if not data.endswith(b"\xff\xd9"):
        return None
    size = None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the header is over
            return size
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        body = data[i + 4 : i + 2 + length]
        if (marker == 0xE1 and body.startswith(b"Exif")) or (marker == 0xEE and body.startswith(b"Adobe")):
            return None
        if marker in _SOF and len(body) >= 5:  # precision, height, width
            size = int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
        i += 2 + length
    return None


def _short(msg: str, limit: int = 120) -> str:
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file as an HxWx3 uint8 RGB array.

    Every input is normalised to one format so that downstream feature
    extractors never branch on mode or bit depth. 16-bit data is mapped
    0..65535 -> 0..255 (divide by 257), float data in 0..1 is scaled by 255,
    alpha is composited on black, EXIF orientation is applied.

    Raises:
        ImageError: with a short human-readable ``reason`` if the file is
            missing, empty, not a regular file (a FIFO, a device), not an image,
            too large (:func:`check_pixels`), truncated or otherwise corrupt.
    """
    p = Path(path)
    _check_file(p)  # before anything opens it: a FIFO would hang the fast path's open()
    fast = _read_plain(p)
    if fast is not None:
        return fast
    im = _open_loaded(p)
    try:
        arr = _to_rgb_array(im, p)
    except ValueError as err:
        raise ImageError(p, str(err)) from None
    finally:
        im.close()
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(p, f"corrupt image: unexpected decoded shape {arr.shape}")
    return arr


def iter_images(
    paths: Sequence[Path], skipped: list[tuple[Path, str]], listed: bool = True
) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, image)`` for each readable image; skip and record the rest.

    One bad file in a folder of thousands must not end a run, but it must not
    go unnoticed either: each one is appended to ``skipped`` as
    ``(path, reason)`` and logged as a warning on the ``normalcy`` logger: within a command
    (:func:`read_notes`), once for them all when it ends (10,000 bad files were 10,000 lines, then the
    command's own list of them), and not at all where the command line lists them (:func:`skips_listed`) unless
    ``listed`` is False: a caller that drops ``skipped`` (a sample, a report's gallery).
    """
    for path in paths:
        p = Path(path)
        try:
            img = read_image(p)
        except ImageError as err:
            skipped.append((p, err.reason))
            if _notes.get() is not None:
                _note("skipped" if listed else "skipped, unlisted", p, f"skipped: {err.reason}")
            else:
                logger.warning("skipping %s: %s", p, err.reason)
            continue
        yield p, img


def _mask_levels(im: Image.Image) -> np.ndarray:
    """A mask's pixels on 0..255, defect bright, for any way masks are written: the brightest channel, since a
    red-on-black or palette mask is dark in luminance (pure red is 76, under the half-way cut); 16 bits mapped as
    :func:`read_image` maps them; and a mask of 0 and 1 only (label masks) as 0 and 255. Each was read as no
    defect at all."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        raw = np.asarray(im)
        labels = im.mode != "F" and raw.size and 0 <= raw.min() and raw.max() <= 1
        a = raw.astype(np.uint8) if labels else _to_rgb_array(im)[:, :, 0]
    elif im.mode in ("1", "L"):
        a = np.asarray(im.convert("L"))
    elif "A" in im.mode or "a" in im.mode or "transparency" in im.info:
        # Composited on black as read_image does: a transparent pixel is unpainted, whatever colour it hides (a
        # white mask whose alpha draws the defect, as annotation tools export, was read as defect everywhere).
        a = _to_rgb_array(im).max(axis=2)
    else:
        a = np.asarray(im.convert("RGB")).max(axis=2)
    return np.ascontiguousarray(a * np.uint8(255) if a.size and a.max() == 1 else a)


def mask_peak(path: str | Path) -> int:
    """A mask's brightest level on 0..255 as :func:`read_mask` cuts it at 127 (a folder: of all its masks), for a
    mask that gave no defect pixel: why, said to the user (a mask of 0 and 100 read as "no defect pixel").

    Raises:
        ImageError: a mask file cannot be read.
    """
    p = Path(path)
    if p.is_dir():
        return max((mask_peak(f) for f in _walk_files(p, recursive=False) if f.suffix.lower() in IMAGE_SUFFIXES),
                   default=0)
    im = _open_loaded(p)
    try:
        levels = _mask_levels(im)
        return int(levels.max()) if levels.size else 0
    finally:
        im.close()


def _quarter_turn(image: Path) -> int | None:
    """The EXIF (or TIFF) orientation, 5 to 8, by which :func:`read_image` turns ``image`` a quarter; else None
    (none, a half turn or a mirror, which keep the size, or a file that cannot be read)."""
    try:
        with _pillow(image) as im:
            turn = im.tag_v2.get(0x0112) if im.format == "TIFF" else _orientation(im)  # type: ignore[attr-defined]
    except ImageError:
        return None
    return turn if turn in (5, 6, 7, 8) else None


def read_mask(
    path: str | Path | None, shape: tuple[int, int], size: tuple[int, int] | None = None,
    image: Path | None = None,
) -> np.ndarray:
    """Read a ground-truth mask as a bool HxW array (pixel > 127 in its brightest channel; a mask of 0 and 1
    only: pixel 1).

    ``None`` means "no defect pixels" and gives an all-False mask. A folder
    holds one mask per defect region (MVTec LOCO) and gives their union. A mask
    whose size differs from its image's ``shape`` = (H, W) is resized with nearest
    neighbour (so it stays binary) and a :class:`MaskSizeWarning` is issued,
    because a mismatch usually means a wrong pairing worth a look.

    ``size`` = (H, W) asks for the mask at another size on purpose (pixel metrics on
    maps whose long side is capped): no warning for that. A mask shrunk this way is
    averaged over each output pixel, which is defect where most of it is.

    ``image``, the mask's image: a mask of its size as stored, where its EXIF orientation turns it a quarter
    (a phone's portrait photo, a mask drawn on its stored pixels), is turned as the image is, with a
    :class:`MaskTurnedWarning` (it was stretched to the turned size, its defect out of place).

    Raises:
        ImageError: the mask file cannot be read.
    """
    h, w = int(shape[0]), int(shape[1])
    oh, ow = (h, w) if size is None else (int(size[0]), int(size[1]))
    if path is None:
        return np.zeros((oh, ow), dtype=bool)
    p = Path(path)
    if p.is_dir():  # one mask per defect region (MVTec LOCO): their union
        # image files only: a Thumbs.db or a notes.txt beside the masks cost the image its whole mask
        files = [f for f in _walk_files(p, recursive=False) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ImageError(p, "mask folder holds no image file")
        return np.logical_or.reduce([read_mask(f, shape, size, image) for f in files])
    im = _open_loaded(p)
    try:
        gray = Image.fromarray(_mask_levels(im))
        mw, mh = gray.size
        turn = _quarter_turn(image) if image is not None and (mw, mh) == (h, w) != (w, h) else None
        if turn is not None:  # turned by Pillow's own table of orientations, as read_image turns its image
            warnings.warn(f"{p}: mask size {mw}x{mh} is its image's size before the image's EXIF orientation "
                          f"({turn}) turns it to {w}x{h}; turned as the image is", MaskTurnedWarning, stacklevel=2)
            gray.getexif()[0x0112] = turn
            gray = ImageOps.exif_transpose(gray)
            mw, mh = gray.size
        if (mw, mh) != (w, h):
            warnings.warn(
                f"{p}: mask size {mw}x{mh} differs from image size {w}x{h}; resized",
                MaskSizeWarning,
                stacklevel=2,
            )
        if (mw, mh) != (ow, oh):
            shrink = size is not None and ow <= mw and oh <= mh
            gray = gray.resize((ow, oh), Image.Resampling.BOX if shrink else Image.Resampling.NEAREST)
        return np.asarray(gray, dtype=np.uint8) > 127
    finally:
        im.close()


# ------------------------------------------------------------------------ datasets


@dataclass
class Sample:
    """One test image with its label and (optional) ground-truth mask."""

    path: Path
    label: int  # 0 normal, 1 anomalous
    defect: str  # "good" or the defect folder name
    mask_path: Path | None  # None: normal, or anomalous with unknown mask


@dataclass
class Dataset:
    """A data set in MVTec AD layout: ``train/good``, ``test/<defect>``, ``ground_truth``."""

    root: Path
    name: str
    train: list[Path]
    test: list[Sample] = field(default_factory=list)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not _is_hidden(d.name))


def _find_mask(gt_dir: Path, rel: Path, listings: dict[Path, dict[str, list[Path]]] | None = None) -> Path | None:
    """The mask of test image ``rel`` (relative to its defect folder) in ``gt_dir/<rel parent>``, else in
    ``gt_dir`` itself (images sorted into subfolders, masks kept in one: they were all "without a mask").
    ``listings`` caches each folder's entries across the images of one data set."""
    listings = {} if listings is None else listings
    for folder in dict.fromkeys((gt_dir / rel.parent, gt_dir)):
        if folder not in listings:
            listings[folder] = _listing(folder)
        found = _mask_in(folder, rel.stem, listings[folder])
        if found is not None:
            return found
    return None


MASK_SUFFIXES: tuple[str, ...] = (".png", *sorted(IMAGE_SUFFIXES - {".png", ".jpg", ".jpeg"}), ".jpg", ".jpeg")
"""Mask suffixes in order of preference: PNG first, lossy JPEG last (a mask saved both ways is read as PNG)."""


def _name_key(name: str) -> str:
    """A file name compared as people read it: in any case, and é one character or e and an accent (macOS
    writes the second, Linux and Windows tools the first: an image copied from a Mac missed its mask)."""
    return unicodedata.normalize("NFC", name).lower()


def _listing(folder: Path) -> dict[str, list[Path]]:
    """A folder's entries by :func:`_name_key` (an absent or unreadable folder has none)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        found.setdefault(_name_key(entry.name), []).append(entry)
    return found


def _mask_in(folder: Path, stem: str, listing: dict[str, list[Path]]) -> Path | None:
    """``<stem>_mask.png``, else ``<stem>.png``, then the same with the other image suffixes (PNG first, JPEG
    last: :data:`MASK_SUFFIXES`; names as :func:`_name_key` compares them, the exact name first), else a folder
    ``<stem>/`` of masks, one per defect (MVTec LOCO's layout; :func:`read_mask` takes their union).
    BMP and TIFF masks (common in industrial sets) were "without a mask"."""
    for suffix in MASK_SUFFIXES:
        for name in (f"{stem}_mask{suffix}", f"{stem}{suffix}"):
            files = [e for e in listing.get(_name_key(name), []) if e.is_file()]
            if files:
                return next((e for e in files if e.name == name), files[0])
    return folder / stem if (folder / stem).is_dir() else None


def _child(folder: Path, name: str) -> Path:
    """``folder/name``, else its subfolder of that name in another case (``train/Good``, ``ground_truth/Crack``
    for ``test/crack``), as tools on Windows and macOS write them; a Linux run missed them without a word."""
    exact = folder / name
    if exact.is_dir() or not folder.is_dir():
        return exact
    return next((d for d in _subdirs(folder) if d.name.lower() == name.lower()), exact)


def is_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a data set in MVTec AD layout (train/good and test/ in it)."""
    return _child(folder / "train", "good").is_dir() and (folder / "test").is_dir()


def _root_hint(folder: Path) -> str | None:
    """For a folder inside a data set (train/good or test given by mistake), the data set's root to give
    instead: the message named ``train/good/train/good`` as missing."""
    for up in folder.resolve().parents[:2]:
        if is_dataset(up):
            return f"{folder} is inside the data set {up}: give that folder, the one holding train/ and test/"
    try:  # a folder of data sets (MVTec AD's 15 categories) was "training folder not found" and nothing more
        inner = [d for d in _subdirs(folder) if is_dataset(d)]
    except OSError:
        inner = []
    if inner:
        names = ", ".join(d.name for d in inner[:5]) + (", ..." if len(inner) > 5 else "")
        return (f"{folder} holds {len(inner)} data set(s) in MVTec AD layout ({names}), not one: give each on its "
                "own, e.g. in a shell loop")
    return None


def _warn_unread_masks(gt_root: Path, test_dir: Path) -> None:
    """Name what of ground_truth/ no test image reads: files directly in it, ground_truth/good (a good image is
    normal everywhere) and ground_truth/<kind> without test/<kind> (a renamed or missing defect folder). They
    were passed by without a word."""
    if not gt_root.is_dir():
        return
    loose = [f for f in _walk_files(gt_root, recursive=False) if f.suffix.lower() in IMAGE_SUFFIXES]  # not a readme
    if loose:
        logger.warning("%s: %d file(s) directly in it are not read (e.g. %s): masks go in ground_truth/<defect>/, "
                       "named after their image in test/<defect>/", gt_root, len(loose), loose[0].name)
    read = {_child(gt_root, d.name) for d in _subdirs(test_dir) if d.name.lower() != "good"}
    for d in _subdirs(gt_root):
        if d in read or not _walk_files(d, recursive=True):
            continue
        if d.name.lower() == "good":
            logger.warning("%s: masks of good images are not read: a test/good image is normal in every pixel", d)
        else:
            logger.warning("%s: no test folder %s to pair its masks with: they are not read (a defect folder "
                           "named otherwise?)", d, test_dir / d.name)


def load_dataset(root: str | Path) -> Dataset:
    """Index a data set in MVTec AD layout (no pixels are read here).

    ``test/good`` gives label 0, every other ``test/<defect>`` label 1; masks
    come from ``ground_truth/<defect>/<stem>_mask.png`` (or ``<stem>.png``, either
    with any image suffix, PNG preferred, or a folder ``<stem>/`` of masks as in MVTec LOCO).
    A defective image without a mask gets ``mask_path=None`` rather than an
    error, since image-level metrics still work. Folders and files are sorted
    so results are reproducible.

    Raises:
        InputError: root missing, ``train/good`` missing or empty, ``test``
            missing or empty. The message is one line naming the path.
    """
    r = Path(root)
    if not r.exists():
        raise InputError(f"dataset folder not found: {r}")
    if not r.is_dir():
        raise InputError(f"dataset path is not a folder: {r}")

    layout = "expected MVTec AD layout train/good, test/<defect>, ground_truth/<defect>"
    train_dir = _child(r / "train", "good")
    if not train_dir.is_dir():
        raise InputError(f"training folder not found: {train_dir} ({_root_hint(r) or layout})")
    train = _walk_files(train_dir, recursive=True)
    if not train:
        raise InputError(f"training folder is empty: {train_dir}")

    test_dir = r / "test"
    if not test_dir.is_dir():
        raise InputError(f"test folder not found: {test_dir} ({layout})")
    gt_root = _child(r, "ground_truth")

    loose = _walk_files(test_dir, recursive=False)
    if loose:
        logger.warning(
            "ignoring %d file(s) directly in %s (not in a test/<defect> folder), e.g. %s",
            len(loose), test_dir, loose[0].name,
        )

    test: list[Sample] = []
    listings: dict[Path, dict[str, list[Path]]] = {}
    for ddir in [d for d in _subdirs(test_dir) if not _leads_back(d, os.path.realpath(test_dir))]:
        defect = ddir.name
        files = _walk_files(ddir, recursive=True)
        if not files:
            logger.warning("test folder %s is empty", ddir)
            continue
        if defect.lower() == "good":  # test/Good (as Windows tools write it) was a defect class: labels all wrong
            test.extend(Sample(f, 0, defect, None) for f in files)
            continue
        gt_dir = _child(gt_root, defect)
        masks = [_find_mask(gt_dir, f.relative_to(ddir), listings) for f in files]
        # 000.json or 000.xml beside 000.png (labelme's and VOC's annotations) is no rival for its image's mask:
        # they shared it, and every image of the defect was left without one
        claimed = Counter(m for f, m in zip(files, masks) if f.suffix.lower() in IMAGE_SUFFIXES)
        masks = [None if claimed[m] and f.suffix.lower() not in IMAGE_SUFFIXES else m for f, m in zip(files, masks)]
        shared = {m for m, n in Counter(masks).items() if m is not None and n > 1}
        if shared:  # a/x.png and b/x.png, or x.png and x.jpg: one mask for them all, no telling whose it is
            logger.warning("%s: %d images (one name in several subfolders, or with several suffixes) share one "
                           "mask file (e.g. %s): left without a mask",
                           ddir, sum(m in shared for m in masks), min(shared))
            masks = [None if m in shared else m for m in masks]
        test.extend(Sample(f, 1, defect, m) for f, m in zip(files, masks))
        missing = masks.count(None)
        unmatched = _walk_files(gt_dir, recursive=True) if missing == len(files) and gt_dir.is_dir() else []
        if unmatched:  # masks there, named otherwise: said at INFO, it read as "this defect has no masks"
            logger.warning("%s: no mask of its %d images in %s, which holds files (e.g. %s): masks are named "
                           "<stem>_mask.png, <stem>.png (or .bmp, .tif, .jpg, ...) or <stem>/ after their image",
                           ddir, missing, gt_dir, unmatched[0].name)
        elif missing:  # named: "1 of 8 images have no mask" left the user to find which (a Thumbs.db is no image)
            images = [(f, m) for f, m in zip(files, masks) if f.suffix.lower() in IMAGE_SUFFIXES]
            without = [f for f, m in images if m is None]
            if without:
                logger.info("%d of %d images in %s have no mask (e.g. %s)", len(without), len(images), ddir,
                            without[0].relative_to(ddir))

    if not test:
        raise InputError(f"test folder has no images in test/<defect> folders: {test_dir}")
    _warn_unread_masks(gt_root, test_dir)

    name = r.resolve().name or str(r)
    return Dataset(root=r, name=name, train=train, test=test)
