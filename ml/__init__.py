"""Estuary's algorithms: data, models, the emulated testbed and the methods of the seven papers.

Everything here runs without the control plane: ``python -m ml list`` and
``python -m ml run METHOD --set key=value``.
"""
