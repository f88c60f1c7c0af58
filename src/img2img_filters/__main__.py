"""``python -m img2img_filters``: the command line."""

from img2img_filters.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
