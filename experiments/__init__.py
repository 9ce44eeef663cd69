"""Sweeps (the papers' tables and recipe studies), the launcher (local and TPU VMs),
and the comparison with the papers, the released checkpoints and each other."""
