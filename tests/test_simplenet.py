"""SimpleNet: training makes the loss fall, reproducible, interruptible, saved without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from normalcy.detectors import create, load
from normalcy.detectors.simplenet import SimpleNet
from normalcy.evaluation.metrics import image_metrics
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import list_files


def _det(**kw) -> SimpleNet:
    params = {"steps": 60, "batch_patches": 256, "hidden": 128, "lr_adaptor": 1e-3, "lr_discriminator": 2e-3,
              "seed": 3, **kw}
    return create("simplenet", FeatureExtractor(image_size=64, precision="fp32"), **params)  # type: ignore[return-value]


def _split(root: Path) -> tuple[list[Path], list[Path], np.ndarray]:
    train = list_files(root / "train" / "good")
    good, bad = list_files(root / "test" / "good"), list_files(root / "test" / "defect")
    return train, good + bad, np.array([0] * len(good) + [1] * len(bad))


def test_loss_falls_and_defects_score_higher(synthetic_root: Path) -> None:
    train, test, labels = _split(synthetic_root)
    det = _det(steps=300).fit(train, progress=False)
    losses = det.train_log_.losses
    assert det.train_log_.steps == 300 and det.train_log_.stopped_by == "steps"
    assert np.mean(losses[-10:]) < 0.5 * losses[0]
    r = det.score(test, progress=False)
    assert image_metrics(labels, r.scores)["image_auroc"] >= 0.9
    assert np.isfinite(det.threshold_)


def test_same_seed_same_scores_and_round_trip(synthetic_root: Path, tmp_path: Path) -> None:
    train, test, _ = _split(synthetic_root)
    a = _det().fit(train, progress=False)
    b = _det().fit(train, progress=False)
    ra, rb = a.score(test, progress=False), b.score(test, progress=False)
    np.testing.assert_array_equal(ra.scores, rb.scores)
    a.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    rl = loaded.score(test, progress=False)
    np.testing.assert_array_equal(ra.scores, rl.scores)
    for m1, m2 in zip(ra.maps, rl.maps):
        np.testing.assert_array_equal(m1, m2)
    assert loaded.threshold_ == a.threshold_


def test_time_budget_and_interrupt_keep_a_usable_model(synthetic_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    train, test, _ = _split(synthetic_root)
    det = _det(steps=100_000, time_budget=1.0).fit(train, progress=False)
    assert det.train_log_.stopped_by == "time" and det.train_log_.steps < 100_000

    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def flaky_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 6:  # two optimizers per training step: interrupt in step 4
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", flaky_step)
    det = _det(steps=50).fit(train, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert det.train_log_.interrupted and det.train_log_.steps == 3
    det.save(tmp_path / "m")
    assert len(load(tmp_path / "m").score(test, progress=False).scores) == len(test)


def test_bad_training_files_are_skipped(synthetic_dataset: Path) -> None:
    folder = synthetic_dataset / "train" / "good"
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    det = _det(steps=10).fit(list_files(folder), progress=False)
    assert {p.name for p, _ in det.skipped_fit_} == {"empty.png", "readme.txt"}
    r = det.score([folder / "empty.png", *list_files(synthetic_dataset / "test" / "good")], progress=False)
    assert [p.name for p, _ in r.skipped] == ["empty.png"]
    assert all(m.shape == (96, 96) for m in r.maps)


def test_a_loaded_model_saves_again_with_its_training_record(tmp_path: Path) -> None:
    """Saving a loaded trained model (to copy it, or after setting its ``choice``) failed with an AttributeError,
    'train_log_' (load does not rebuild the training log): it writes back model.json's ``training`` as it was."""
    import json

    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    first = _det(steps=2).fit(images, progress=False).save(tmp_path / "a")
    again = load(first).save(tmp_path / "b")
    read = [json.loads((d / "model.json").read_text())["training"] for d in (first, again)]
    assert read[0] == read[1] and read[0]["steps"] == 2
