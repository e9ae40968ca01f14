"""Chunk planning and the sync engine: the only place connectors and the workspace meet."""
