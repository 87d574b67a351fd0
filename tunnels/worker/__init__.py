"""The tunnel worker, laid out by what it does (see tunnels/worker/reconciler.py for the pass)."""
