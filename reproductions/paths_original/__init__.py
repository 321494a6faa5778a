"""The original paths code (Dold et al.) run on this machine: harness, split helper, outputs."""
