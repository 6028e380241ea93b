"""The package version, written once: pyproject.toml reads it (setuptools dynamic) and so does `attnpat --version`."""

__version__ = "0.1.0"
