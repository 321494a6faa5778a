"""Analysis: read runs and trajectories back (``io``), analyse them with estimator-like steps,
fan the steps out over a sweep's runs on Ray (``runner``), write results back via tracking."""
