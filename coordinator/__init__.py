"""coordinator: see README.md."""
