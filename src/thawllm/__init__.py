"""thaw: GGUF inference services that start from a process snapshot."""

__version__ = "0.1.0"
