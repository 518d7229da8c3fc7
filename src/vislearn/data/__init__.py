"""Data: embedded datasets (no download), on-disk formats, transforms and distortions."""
