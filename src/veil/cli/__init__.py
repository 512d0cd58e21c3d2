"""veil.cli."""
