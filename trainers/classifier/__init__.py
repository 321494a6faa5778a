"""The ``classifier`` trainer: MLP or small CNN classifiers (the "EDM of neural networks" study)."""
