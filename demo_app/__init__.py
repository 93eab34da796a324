"""demo_app: see README.md."""
