"""Analysis steps by name: stable names → step classes, imported only when a step is used.

Validating a spec imports the one step class it names (to check parameter names against its
signature); step modules keep their heavy imports (clean-fid, pyEDM's pools, Ray) inside
functions, so that stays light.
"""

from __future__ import annotations

import importlib

ANALYSIS_STEPS: dict[str, str] = {
    "edm": "analysis.edm:EmbedDimension",
    "smap": "analysis.edm:SMapNonlinearity",
    "simplex": "analysis.edm:SimplexSkill",
    "ccm": "analysis.edm:CrossMapping",
    "sindy": "analysis.sindy:SINDy",
    "pdefind": "analysis.sindy:PDEFind",
    "dataset_pde": "analysis.dataset_pde:DatasetPDE",
    "weight_pca": "analysis.spectra:WeightPCA",
    "koopman_spectrum": "analysis.spectra:KoopmanSpectrum",
    "fid": "analysis.generative:FID",
    "elbo": "analysis.generative:ELBO",
}


def get_analysis_step(name: str) -> type:
    module, attr = ANALYSIS_STEPS[name].split(":")
    return getattr(importlib.import_module(module), attr)
