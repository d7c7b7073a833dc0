"""mirrorhub: an HTTP redirect dispatcher for download mirrors."""

__version__ = "0.1.0"
