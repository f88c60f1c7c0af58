"""``python -m img2img``: the command line."""

from img2img.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
