"""img2img: teach small convolutional networks to imitate image filters."""

__version__ = "0.1.0"
