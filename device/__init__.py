"""device: see README.md."""
