"""veil.securecompute."""
