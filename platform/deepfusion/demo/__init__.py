"""Seeded, deterministic SYNTHETIC corpora in the real layouts, for offline demos and tests.

Nothing here is real data; every report that uses it says "synthetic".
"""
