"""Tiny random-weight Kolors models in the real Hub layouts, for tests and demos."""
