"""Why reading is not overlapped with the backbone: one feature pass over a folder, two ways.

    python bench/read_overlap.py [--data ../shared/data/magnetic_tile] [--rounds 3]

* overlapped: a background thread reads and resizes batch k+1 while the backbone runs on batch k (what
  ``FeatureExtractor.iter_batches`` did until 3 December 2026);
* in turn: ``FeatureExtractor.iter_batches`` as it is: two threads decode and resize a batch, then the
  backbone runs on all cores.

Both run in one process, alternating, ``--rounds`` times, over the test images at batch size 8 (the
detectors' default). Prints a markdown table of images per second.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from turns import in_turns, markdown

from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import iter_images, load_dataset

ROOT = Path(__file__).resolve().parents[1]


def overlapped(fx: FeatureExtractor, paths: list[Path], batch_size: int) -> Iterator[int]:
    """The former pipeline: read the next batch in a background thread while the backbone works."""
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def read(chunk: list[Path]):
        return fx.preprocess([im for _, im in iter_images(chunk, [])])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, chunks[0])
        for k in range(len(chunks)):
            x = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(read, chunks[k + 1])
            fx(x)
            yield len(x)


def in_turn(fx: FeatureExtractor, paths: list[Path], batch_size: int) -> Iterator[int]:
    for batch in fx.iter_batches(paths, batch_size):
        yield len(batch.paths)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    paths = [s.path for s in load_dataset(args.data).test]
    fx = FeatureExtractor()
    sum(in_turn(fx, paths[:64], args.batch_size))  # warm-up: backbone kernels, file cache
    ways = {"overlapped (background reader)": overlapped, "in turn (two readers, then the backbone)": in_turn}
    runs = in_turns({name: (lambda way=way: sum(way(fx, paths, args.batch_size))) for name, way in ways.items()},
                    args.rounds)
    rates = {name: [n / s for s, n in r] for name, r in runs.items()}
    print(f"{len(paths)} images from {args.data.name}, batch size {args.batch_size}, {args.rounds} rounds\n")
    print(markdown(["reading", "images/s, each round"],
                   [[name, " / ".join(f"{v:.1f}" for v in r)] for name, r in rates.items()]))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
