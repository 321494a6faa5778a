"""FID (clean-fid, offline classifier extractor) and the ELBO step on diffusion models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import generative
from analysis.generative import ELBO, FID, build_extractor, features, fid_between
from dynsweep.errors import DataError
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.data import load_dataset
from trainers.diffusion.trainer import DiffusionConfig, DiffusionTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit


def exported(trainer_cls, config, name: str, folder: Path, steps: int) -> Path:
    """Train a little and save ``model.pt`` as a sweep trial does."""
    trainer = trainer_cls(config)
    ctx = LocalContext(folder / name)
    fit(trainer, ctx, LoopConfig(eval_every=steps), StopRule(iterations=steps))
    path = folder / f"{name}.pt"
    header = {"trainer": name, "config": config.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": steps, "state": ctx.export}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    classifier = exported(
        ClassifierTrainer,
        ClassifierConfig.model_validate({"model": {"widths": [64]}}),
        "classifier",
        folder,
        150,
    )
    diffusion = exported(
        DiffusionTrainer,
        DiffusionConfig.model_validate(
            {
                "forward": {"K": 6},
                "model": {
                    "channels": 8,
                    "num_res_blocks": 1,
                    "mult": [1, 2],
                    "attention_levels": [],
                },
                "optimizer": {"lr": 1e-3, "warmup": 1},
                "samples": 0,
            }
        ),
        "diffusion",
        folder,
        10,
    )
    return {"classifier": classifier, "diffusion": diffusion}


@pytest.fixture
def extractor(models):
    module, name, resize = build_extractor("classifier", str(models["classifier"]), "cpu")
    return module, resize


def test_fid_of_data_against_itself_is_zero_and_against_noise_large(extractor, tmp_path):
    (train, _), (val, _) = load_dataset("digits", tmp_path, 0.2, 0)
    itself = fid_between(train[:400], train[:400], *extractor)
    held_out = fid_between(train[:400], val[:300], *extractor)
    noise = fid_between(train[:400], torch.rand(300, *train.shape[1:]), *extractor)
    assert abs(itself) < 1e-3
    assert noise > 20 * held_out > 0


def test_fid_step_samples_the_model_and_caches_reference_statistics(models, monkeypatch, tmp_path):
    monkeypatch.setenv("DYNSWEEP_CACHE", str(tmp_path / "cache"))
    checkpoint = torch.load(models["diffusion"], weights_only=True)
    step = FID(
        samples=60,
        extractor="classifier",
        classifier=str(models["classifier"]),
        batch_size=25,
        data_dir=str(tmp_path),
    )
    first = step.fit(checkpoint).metrics["fid"]
    cached = list((tmp_path / "cache" / "fid").glob("digits-train-classifier-*.npz"))
    assert len(cached) == 1
    assert math.isfinite(first) and first > 0
    assert step.fit(checkpoint).metrics["fid"] == pytest.approx(first)  # same seed, cached ref


def test_elbo_step_reports_nats_and_bits_per_dim(models, tmp_path):
    checkpoint = torch.load(models["diffusion"], weights_only=True)
    result = ELBO(images=32, data_dir=str(tmp_path)).fit(checkpoint)
    m = result.metrics
    assert m["bits_per_dim"] == pytest.approx(m["nats"] / (64 * math.log(2)))
    assert len(result.tables["levels"]["k"]) == 5
    assert all(math.isfinite(v) for v in m.values())


def test_inception_offline_fails_with_a_message_naming_the_way_out(monkeypatch):
    import cleanfid.downloads_helper as downloads

    if Path("/tmp/inception-2015-12-05.pt").exists():
        pytest.skip("clean-fid's Inception weights are cached here: no download to fail")
    monkeypatch.setattr(downloads, "inception_url", "http://127.0.0.1:9/inception.pt")
    with pytest.raises(DataError, match="Inception weights.*extractor: classifier"):
        build_extractor("inception", None, torch.device("cpu"))


@pytest.mark.slow  # trains the classifier (~50 s)
def test_auto_classifier_is_trained_once_and_cached(monkeypatch, tmp_path):
    from analysis.generative import auto_classifier

    monkeypatch.setenv("DYNSWEEP_CACHE", str(tmp_path))
    path = auto_classifier("digits", str(tmp_path), steps=60)
    stamp = path.stat().st_mtime_ns
    module, name, _ = build_extractor("classifier", "auto", "cpu", "digits", str(tmp_path))
    assert name.startswith("classifier-")
    assert auto_classifier("digits", str(tmp_path), steps=60).stat().st_mtime_ns == stamp
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["trainer"] == "classifier"


def test_classifier_features_on_the_device_equal_clean_fids_pipeline(extractor, tmp_path):
    """The classifier extractor's images stay on the device; the features are clean-fid's."""
    from cleanfid import fid as cleanfid

    module, resize = extractor
    (train, _), _ = load_dataset("digits", tmp_path, 0.2, 0)
    images = train[:90]
    ours = features(iter(images.split(40)), 90, 40, module, resize, torch.device("cpu"))
    padded = iter(torch.cat([images, images[:30]]).split(40))

    def generator(_):
        return next(padded).float().clamp(0, 1).expand(-1, 3, -1, -1) * 255

    theirs = cleanfid.get_model_features(
        generator,
        module,
        mode="clean",
        z_dim=1,
        num_gen=90,
        batch_size=40,
        device=torch.device("cpu"),
        verbose=False,
        custom_fn_resize=resize,
    )
    assert ours.shape == theirs.shape == (90, theirs.shape[1])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_fid_step_builds_its_model_and_extractor_on_its_device(models, monkeypatch, tmp_path):
    """The device plumbing, checked on the CPU: the step's device reaches the rebuilt model,
    the extractor and the feature computation."""
    monkeypatch.setenv("DYNSWEEP_CACHE", str(tmp_path / "cache"))
    seen = {}
    real_load, real_features = generative._diffusion, generative.features

    def load(checkpoint, data_dir, workdir, device):
        seen["model"] = device
        trainer = real_load(checkpoint, data_dir, workdir, device)
        seen["parameters"] = {p.device for p in trainer.ema.parameters()}
        return trainer

    def feats(batches, n, batch_size, extractor, resize, device):
        seen.setdefault("features", set()).add(device)
        seen["extractor"] = {p.device for p in extractor.parameters()}
        return real_features(batches, n, batch_size, extractor, resize, device)

    monkeypatch.setattr(generative, "_diffusion", load)
    monkeypatch.setattr(generative, "features", feats)
    checkpoint = torch.load(models["diffusion"], weights_only=True)
    step = FID(
        samples=30,
        extractor="classifier",
        classifier=str(models["classifier"]),
        batch_size=15,
        data_dir=str(tmp_path),
        device="cpu",
    )
    step.fit(checkpoint)
    cpu = torch.device("cpu")
    assert seen["model"] == cpu and seen["parameters"] == {cpu}
    assert seen["features"] == {cpu} and seen["extractor"] == {cpu}
