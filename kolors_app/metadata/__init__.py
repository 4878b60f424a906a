"""Parameters inside images: our JSON chunk, A1111 infotext, ControlNet text."""
