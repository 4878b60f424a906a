"""Kolors Studio: a web app for the Kolors text-to-image model."""

__version__ = "0.1.0"
