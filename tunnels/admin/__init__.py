"""Admin: reading is free, but configuration changes go through the service layer.

One module per role; importing them registers the model admins.
"""

from tunnels.admin import history, keys, nodes, tunnels

__all__ = ["history", "keys", "nodes", "tunnels"]
