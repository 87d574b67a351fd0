"""The dashboard every user logs into: server-rendered pages over the service layer.

Views are split by role (``auth``, ``tunnels``, ``tunnel``, ...); ``urls`` mounts
them at the site root. Every change goes through ``tunnels.services`` and every
row is narrowed by the one visibility rule (``tunnelsite.owned.visible``), so
another user's object is a 404 page here exactly as it is a 404 in the API.
"""
