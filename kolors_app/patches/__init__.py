"""Every change to a third-party library's behaviour, one module per library; checked and applied by startup.py."""
