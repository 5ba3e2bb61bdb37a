"""Offline assets as a plugin: ``asset://<name>`` model paths and ``python -m opd_assets``.

The fetchers themselves are public in :mod:`opd_core.assets`; import them from there.
"""
