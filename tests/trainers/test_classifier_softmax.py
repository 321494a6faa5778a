"""``model.final_activation: softmax``: the output of jimzers/edm_nn's MLPNet (softmax, then
``F.cross_entropy`` applies a second one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.classifier.model import Classifier, ModelConfig
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit


def original_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """The original's loss, from its formula: cross-entropy of softmax(logits) taken as logits."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    log_norm = np.log(np.exp(p).sum(1))
    return float(np.mean(log_norm - p[np.arange(len(labels)), labels]))


def test_softmax_output_is_softmax_of_the_logits_with_the_same_weights():
    torch.manual_seed(0)
    plain = Classifier(ModelConfig(widths=(8,)), (1, 8, 8), 10)
    soft = Classifier(ModelConfig(widths=(8,), final_activation="softmax"), (1, 8, 8), 10)
    soft.load_state_dict(plain.state_dict())  # no parameter added or renamed
    x = torch.rand(5, 1, 8, 8)
    out = soft(x)
    torch.testing.assert_close(out, torch.softmax(plain(x), -1))
    torch.testing.assert_close(out.sum(1), torch.ones(5))


def test_validation_loss_is_the_originals_double_softmax_cross_entropy(tmp_path):
    cfg = ClassifierConfig(model={"widths": [16], "final_activation": "softmax"})
    trainer = ClassifierTrainer(cfg)
    trainer.setup(LocalContext(tmp_path))
    with torch.no_grad():
        x = trainer.val_x
        for layer in trainer.model.layers:  # flatten, hidden block, last linear layer
            x = layer(x)
    expected = original_loss(x.double().numpy(), trainer.val_y.numpy())
    assert float(trainer.evaluate()["val/loss"]) == pytest.approx(expected, rel=1e-5)


def test_a_confident_correct_prediction_costs_log_e_plus_9_minus_1():
    # one-hot outputs: softmax(one-hot) puts e / (e + 9) on the label
    logits = np.array([[60.0] + [0.0] * 9, [0.0, 0.0, 60.0] + [0.0] * 7])
    labels = np.array([0, 2])
    assert original_loss(logits, labels) == pytest.approx(math.log(math.e + 9) - 1, abs=1e-9)
    soft = Classifier(ModelConfig(widths=(4,), final_activation="softmax"), (1, 8, 8), 10)
    out = torch.softmax(torch.tensor(logits), -1)
    loss = torch.nn.functional.cross_entropy(out, torch.tensor(labels))
    assert float(loss) == pytest.approx(1.4611502, abs=1e-6) and soft.softmax_output


def test_softmax_output_classifier_learns_digits(tmp_path):
    cfg = ClassifierConfig(
        model={"widths": [32], "final_activation": "softmax"},
        optimizer={"name": "adam", "lr": 3e-3},
    )
    ctx = LocalContext(tmp_path)
    result = fit(ClassifierTrainer(cfg), ctx, LoopConfig(eval_every=100), StopRule(iterations=200))
    assert ctx.metrics[0][1]["val/acc"] < 0.3 < 0.6 < result.metrics["val/acc"]  # from chance
    assert result.metrics["val/loss"] > math.log(math.e + 9) - 1  # the floor of this loss


def test_unknown_final_activation_names_the_field():
    with pytest.raises(ValueError, match="final_activation"):
        ModelConfig(final_activation="sigmoid")
