"""PNG encoder settings for `normalcy predict`'s heatmaps, timed in turns in one process.

    python bench/png_encoders.py [--rounds 10]

For magnetic_tile at its native size, hazelnut_toy (512x512) and hazelnut_toy at 1600x800, the two pictures
predict writes per image (the overlay, and original | overlay side by side) are drawn for a few test images
with a smooth random map, then encoded by OpenCV's libpng with each setting, one thread. Prints ms and kB per
image (both pictures) for each setting: the measurement behind ``normalcy.images.heatmap._PNG_FAST``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from turns import in_turns, markdown

from normalcy.images.heatmap import overlay, side_by_side

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
F, S, C = cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_COMPRESSION
SETTINGS = {
    "level 1, Up, run-length": [C, 1, F, cv2.IMWRITE_PNG_FILTER_UP, S, cv2.IMWRITE_PNG_STRATEGY_RLE],
    "level 1, Up, Huffman only": [C, 1, F, cv2.IMWRITE_PNG_FILTER_UP, S, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    "level 1, Sub, Huffman only": [C, 1, F, cv2.IMWRITE_PNG_FILTER_SUB, S, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    "level 1, Up, default strategy": [C, 1, F, cv2.IMWRITE_PNG_FILTER_UP],
    "level 3, adaptive filters": [C, 3],
    "level 0 (stored, no compression)": [C, 0, F, cv2.IMWRITE_PNG_FILTER_NONE],
}


def pictures(source: str, size: tuple[int, int] | None, n: int = 6) -> list[np.ndarray]:
    """BGR overlay and side-by-side pictures of n test images, as predict draws them."""
    out = []
    rng = np.random.default_rng(0)
    paths = sorted((DATA / source).glob("test/*/*"))
    if not paths:  # no picture to encode: a ZeroDivisionError
        raise SystemExit(f"no test images under {DATA / source}: this benchmark needs ../shared/data/{source}")
    for p in paths[:: max(1, len(paths) // n)][:n]:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        if size is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        amap = cv2.GaussianBlur(rng.random(rgb.shape[:2]).astype(np.float32), (0, 0), 8)
        drawn = overlay(rgb, amap, 0.0, 1.0)
        out += [cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), cv2.cvtColor(side_by_side(rgb, drawn), cv2.COLOR_RGB2BGR)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    sets = {"magnetic_tile (native)": pictures("magnetic_tile", None), "hazelnut_toy 512x512": pictures("hazelnut_toy", None),
            "hazelnut_toy 1600x800": pictures("hazelnut_toy", (1600, 800), n=3)}
    rows = []
    for name, pics in sets.items():
        per_image = len(pics) // 2
        runs = in_turns({s: (lambda prm=prm: sum(len(cv2.imencode(".png", p, prm)[1]) for p in pics))
                         for s, prm in SETTINGS.items()}, args.rounds)
        for s, r in runs.items():
            ms = float(np.median([t for t, _ in r])) / per_image * 1000
            rows.append([name, s, f"{ms:.1f}", f"{r[0][1] / per_image / 1000:.0f}"])
    print(f"{args.rounds} rounds, one thread; ms and kB per image (overlay + side by side)\n")
    print(markdown(["images", "setting", "median ms an image", "kB an image"], rows))


if __name__ == "__main__":
    main()
