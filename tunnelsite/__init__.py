"""tunnelsite: a self-hosted, multi-user SSH tunnel manager."""

__version__ = "0.1.0"
