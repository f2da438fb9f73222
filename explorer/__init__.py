"""Dynamics Explorer: see and train dynamical systems live."""

__version__ = "0.1.0"
