"""Admin: reading is free, but configuration changes go through the service layer.

One module per role; importing them registers the model admins.
"""

from django.contrib import admin

from tunnels.admin import history, keys, nodes, tunnels

# The model list sidebar takes a third of a 1280 px screen from the tunnels' columns; the
# admin's index page lists the same models.
admin.site.enable_nav_sidebar = False
admin.site.site_header = "tunnelsite administration"

__all__ = ["history", "keys", "nodes", "tunnels"]
