"""Untrusted bytes to safe images (guard, decode, fit), and fast PNG encoding."""
