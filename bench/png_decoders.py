"""PNG decoders at 1600x800, timed in turns in one process: the measurement behind normalcy.images.io's choice.

    python bench/png_decoders.py [--rounds 15]

Eight hazelnut_toy images resized to 1600x800 and written as PNG the way bench/highres.py writes them
(OpenCV, zlib level 3), decoded from memory by Pillow, OpenCV and imagecodecs (libpng and libspng), each in turn, one thread.
Prints ms an image (best and median round) and checks that all of them give the same pixels.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
from PIL import Image
from turns import in_turns, markdown

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hazelnut_toy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--source", type=Path, default=DATA)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    files = sorted(p for p in args.source.glob("test/*/*") if p.suffix.lower() in (".png", ".jpg"))[:8]
    if not files:  # no blob to decode: an IndexError
        raise SystemExit(f"no test/*/*.png or .jpg under {args.source}: pass --source DIR (MVTec layout)")
    blobs = []
    for f in files:
        big = cv2.resize(cv2.imread(str(f)), (1600, 800), interpolation=cv2.INTER_CUBIC)
        blobs.append(cv2.imencode(".png", big, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes())
    decoders = {
        "Pillow": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")),
        "OpenCV": lambda b: cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
        "imagecodecs": imagecodecs.png_decode,
        "imagecodecs libspng": imagecodecs.spng_decode,  # what normalcy.images.io uses: as fast, and silent
    }
    first = {name: fn(blobs[0]) for name, fn in decoders.items()}
    same = all(np.array_equal(a, first["Pillow"]) for a in first.values())
    runs = in_turns({name: (lambda fn=fn: [fn(b) for b in blobs]) for name, fn in decoders.items()},
                    args.rounds)
    times = {name: [s / len(blobs) * 1000 for s, _ in r] for name, r in runs.items()}
    print(f"{len(blobs)} PNGs of 1600x800 from {args.source.name}, {args.rounds} rounds; same pixels: {same}\n")
    print(markdown(["decoder", "best ms an image", "median ms an image"],
                   [[name, f"{min(t):.1f}", f"{float(np.median(t)):.1f}"] for name, t in times.items()]))


if __name__ == "__main__":
    main()
