"""Graph rewrites, one job each."""
