"""Readers of the dataset formats: xlsa17 (CUB, SUN, AWA2), a custom folder, the class table."""
