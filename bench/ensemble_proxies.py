"""Would an ensemble of gaussian and patchcore beat choosing one? Scored on the dev proxies (validation data).

    python bench/ensemble_proxies.py [PROXY ...]     # all four proxies of bench/dev_proxies.py, ~5 minutes

For each proxy of ``bench/dev_proxies.py`` (built from normal training images, or elpv), fits gaussian and
patchcore as ``normalcy eval`` does (each on its own default backbone) and combines their image scores, each
put in units of its own calibration scores (the out-of-sample scores of normal training images that set its
threshold: gaussian's cross-validated ones, patchcore's leave-one-image-out ones), three ways: the sum of z-scores, the sum of
robust scores ((s - median) / (99th percentile - median)) and the larger z-score. Prints image AUROC per
proxy and the mean. The calibration scores are caught as the base class sets the threshold from them
(``Detector._set_threshold``); a model does not keep them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import dev_proxies
import numpy as np

from normalcy.detectors import default_backbone
from normalcy.detectors.base import Detector
from normalcy.evaluation.evaluate import run_eval
from normalcy.evaluation.metrics import image_metrics
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

_set_threshold = Detector._set_threshold


def _keep_calibration(self: Detector, calib) -> None:
    self.bench_calibration = np.asarray(calib.scores, dtype=np.float64)
    _set_threshold(self, calib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("proxies", nargs="*", metavar="PROXY", help=f"of {', '.join(dev_proxies.PROXIES)} (default: all)")
    names = ap.parse_args().proxies or list(dev_proxies.PROXIES)
    unknown = [n for n in names if n not in dev_proxies.PROXIES]
    if unknown:  # a KeyError's traceback said neither what was wrong nor what to give
        ap.error(f"unknown proxy {unknown[0]!r}: choose from {', '.join(dev_proxies.PROXIES)}")
    Detector._set_threshold = _keep_calibration
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="normalcy-ensemble-") as tmp:
        for name in names:
            build, sizing = dev_proxies.PROXIES[name]
            ds = load_dataset(build(Path(tmp) / name))
            ex = FeatureExtractor(image_size=sizing(ds.train))
            label = {s.path: s.label for s in ds.test}
            got = {}
            for det_name in ("gaussian", "patchcore"):
                own = ex.with_backbone(default_backbone(det_name))  # each on its own backbone, as eval runs it
                metrics, det, result = run_eval(ds, det_name, own, progress=False, latency_images=0)
                order = np.argsort([str(p) for p in result.paths])
                y = np.array([label[p] for p in result.paths])[order]
                got[det_name] = (np.asarray(result.scores)[order], det.bench_calibration, metrics["image_auroc"])
            (sg, cg, ag), (sp, cp, ap) = got["gaussian"], got["patchcore"]

            def z(s: np.ndarray, c: np.ndarray) -> np.ndarray:
                return (s - c.mean()) / (c.std() + 1e-12)

            def robust(s: np.ndarray, c: np.ndarray) -> np.ndarray:
                return (s - np.median(c)) / (np.quantile(c, 0.99) - np.median(c) + 1e-12)

            def auroc(s: np.ndarray) -> float:
                return image_metrics(y, s)["image_auroc"]

            rows[name] = [ag, ap, auroc(z(sg, cg) + z(sp, cp)), auroc(robust(sg, cg) + robust(sp, cp)),
                          auroc(np.maximum(z(sg, cg), z(sp, cp)))]
            print(f"{name}: " + " ".join(f"{v:.3f}" for v in rows[name]), file=sys.stderr, flush=True)
    print("| proxy | gaussian | patchcore | sum of z-scores | sum of robust scores | larger z-score |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    print("| mean | " + " | ".join(f"{v:.3f}" for v in np.mean(list(rows.values()), 0)) + " |")


if __name__ == "__main__":
    main()
