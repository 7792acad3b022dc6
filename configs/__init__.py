"""Experiment configs (ml_collections ``get_config(variant)`` files), importable as ``configs.x``."""
