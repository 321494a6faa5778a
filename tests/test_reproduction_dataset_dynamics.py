"""The dataset-dynamics report script's own arithmetic (its MLflow reading runs by hand)."""

from __future__ import annotations

import numpy as np

from reproductions import dataset_dynamics as report


def test_the_epoch_a_frame_settled_at():
    steps = np.array([938, 1876, 2814, 3752])
    assert report._settled(steps, np.array([3.0, 5.0, 5.0, 5.0])) == 1876 / 469
    assert report._settled(steps, np.array([3.0, 5.0, 5.0, 6.0])) == 3752 / 469
    assert report._settled(steps, np.array([4.0, 4.0, 4.0, 4.0])) == 0.0


def test_the_pde_table_sets_each_term_beside_the_originals():
    class Run:
        class data:  # noqa: N801 - the shape of an MLflow run
            metrics = {
                "analysis/pde/coef/2_terms/uu_x": -6.0,
                "analysis/pde/coef/2_terms/u2u_x": 11.0,
                "analysis/pde/coef/8_terms/u_xx": 0.2,
                "analysis/pde/terms_found": 2.0,
            }

    ours = report.pde_coefficients(Run)
    assert ours == {2: {"uu_x": -6.0, "u^2u_x": 11.0}, 8: {"u_xx": 0.2}}
    lines = report.pde_table(ours)
    assert "| 2 | uu_x | -7.57265 | -6.00000 | +21 % |" in lines
    assert "| 2 | u^2u_x | 9.20864 | 11.00000 | +19 % |" in lines
    assert "| 3 | uu_x | -8.13788 | not found | — |" in lines  # no 3-term model of ours
    assert "| 8 | u_xx | — | 0.20000 | — |" in lines  # the original has no 8-term model
    assert "| 2 | u^2u_xx | — |" not in " ".join(lines)  # a term neither 2-term model has


def test_the_budget_table_samples_every_twenty_epochs():
    steps = np.arange(1, 91) * 938  # an evaluation every 2 epochs, to epoch 180
    row = {
        "b": 36,
        "val/rank": (steps, np.full(90, 37.0)),
        "val/transition_frame": (steps, np.arange(90.0)),
        "val/loss": (steps, np.linspace(0.02, 0.01, 90)),
    }
    lines = report.budget_table([row])
    assert len(lines) == 2 + 9  # epochs 20, 40, …, 180
    assert lines[2] == "| 36 | 20 | 37 | 9 | 0.0190 |"  # epoch 20 = the 10th evaluation
    assert lines[-1].startswith("| 36 | 180 | 37 | 89 |")
