"""The HTTP service: a Starlette app in front of one engine."""
