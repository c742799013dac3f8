"""Snapshots of template processes with CRIU: the criu wrapper, its installer and checks."""
