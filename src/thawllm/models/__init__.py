"""Model files: the bundled default, user paths, and synthetic models."""
