"""Kolors Studio: parse flags, build the settings and the UI, launch."""

import sys

import kolors_app.core.zerogpu  # noqa: F401  On ZeroGPU, `spaces` must patch torch before anything imports it.
from kolors_app.core.config import load_settings


def main(argv: list[str]) -> int:
    settings, args = load_settings(argv)
    if args.check:
        from kolors_app.serving.doctor import run_check

        return run_check(settings)
    from kolors_app.launch import launch

    launch(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
