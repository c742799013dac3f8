"""The service process: loads a model, parks as a template, serves on command."""
