"""Finished images as files: history entries, the outputs folder, served PNGs."""
