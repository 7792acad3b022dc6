"""Command-line launchers (absl flags); run them as scripts, e.g. ``python launch/train.py``."""
