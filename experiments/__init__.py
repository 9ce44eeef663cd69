"""Sweeps that reproduce the MobileNet papers' tables, and the comparison with them."""
