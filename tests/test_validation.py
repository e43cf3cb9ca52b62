"""--detector auto: a choice made on held-out normal training images with synthetic defects, never on test labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_synthetic_dataset, run_cli
from PIL import Image

from normalcy.detectors import DETECTORS
from normalcy.errors import InputError
from normalcy.evaluation.validation import CANDIDATES, choose_detector, synthetic_split
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import list_files


def test_split_holds_out_normal_images_and_plants_a_defect_in_each(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=20)
    train = list_files(root / "train" / "good")
    split = synthetic_split(train, tmp_path / "val", size=64)
    assert len(split.normal) == len(split.defective) == 4 and len(split.fit) == 16
    assert set(split.fit) < set(train) and len(set(split.fit)) == 16  # the other 4 are held out, not fitted on
    for normal, defect in zip(split.normal, split.defective):
        a, b = np.asarray(Image.open(normal)), np.asarray(Image.open(defect))
        assert a.shape == b.shape == (64, 64, 3)
        assert (np.abs(a.astype(int) - b.astype(int)).sum(-1) > 0).mean() >= 0.005  # a defect is there
    with pytest.raises(InputError, match="at least"):
        synthetic_split(train[:6], tmp_path / "few")


def test_with_backbone_keeps_every_other_option() -> None:
    """auto gives each candidate its own backbone, with the user's other extractor options unchanged."""
    ex = FeatureExtractor(image_size=(64, 96), precision="fp32", pool_grid=2)
    other = ex.with_backbone("efficientnet_lite2")
    assert other.spec.name == "efficientnet_lite2" and other.patch_levels == other.spec.patch_levels
    assert (other.size, other.precision, other.pool_grid) == ((64, 96), "fp32", 2)
    assert ex.with_backbone("efficientnet_lite0") is ex


def test_choice_is_a_candidate_with_its_validation_numbers(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    name, found = choose_detector(list_files(root / "train" / "good"),
                                  FeatureExtractor(image_size=64, precision="fp32"))
    assert name in CANDIDATES and set(found) == set(CANDIDATES)
    assert all(0.0 <= v <= 1.0 for v in found.values()) and found[name] == max(found.values())


def test_cli_fit_auto_records_the_choice(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "-d", "auto", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["detector"] == meta["choice"]["chosen"] in CANDIDATES
    assert meta["extractor"]["backbone"] == DETECTORS[meta["detector"]].default_backbone  # no --backbone: its own
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m2", "-d", "auto", "--steps", "5")
    assert r.returncode == 1 and "do not apply" in r.stderr and "Traceback" not in r.stderr


def test_experimental_detectors_are_said_and_never_chosen(tmp_path: Path) -> None:
    experimental = {n for n, c in DETECTORS.items() if c.experimental}
    assert experimental == {"simplenet", "draem", "efficientad"} and not experimental & set(CANDIDATES)
    assert "Experimental" in " ".join(run_cli("fit", "--help").stdout.split())
    root = make_synthetic_dataset(tmp_path / "ds", n_train=6)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "-d", "simplenet", "--steps", "2",
                "--image-size", "64")
    assert r.returncode == 0 and "simplenet is experimental" in " ".join(r.stderr.split()), r.stderr
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "g", "--image-size", "64")
    assert r.returncode == 0 and "is experimental" not in r.stderr


def test_input_norm_auto_tries_both_and_the_model_keeps_its_choice(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "--input-norm", "auto", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert set(meta["choice"]["validation_auroc"]) == {"gaussian/own", "gaussian/imagenet"}
    assert meta["extractor"]["input_norm"] == meta["choice"]["input_norm"] in ("own", "imagenet")
    # a model saved with ImageNet's normalisation loads with it; one from before the option loads as "own"
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "i", "--input-norm", "imagenet", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    from normalcy.detectors import load

    det = load(tmp_path / "i")
    assert det.extractor.input_norm == "imagenet" and det.extractor.spec.mean == (0.485, 0.456, 0.406)
    raw = json.loads((tmp_path / "m" / "model.json").read_text())
    del raw["extractor"]["input_norm"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(raw))
    assert load(tmp_path / "m").extractor.spec.mean == (0.5, 0.5, 0.5)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "x", "--input-norm", "bogus")
    assert r.returncode == 1 and "input normalisation 'bogus'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("score-batch", root / "test", "-o", tmp_path / "zs", "--input-norm", "auto")
    assert r.returncode == 1 and "score-batch has none" in r.stderr and "Traceback" not in r.stderr


def test_with_input_norm_keeps_every_other_option() -> None:
    ex = FeatureExtractor(image_size=(64, 96), pool_grid=2, precision="fp32")
    other = ex.with_input_norm("imagenet")
    assert {k: v for k, v in other.config.items() if k != "input_norm"} == \
        {k: v for k, v in ex.config.items() if k != "input_norm"}
    assert other.spec.std == (0.229, 0.224, 0.225) and ex.spec.std == (0.5, 0.5, 0.5)
    assert other.with_backbone("efficientnet_lite2").input_norm == "imagenet"
