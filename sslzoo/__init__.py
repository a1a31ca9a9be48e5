"""sslzoo: classic pretext-task self-supervised vision models — train, publish, load, extract, probe."""
__version__ = "0.1.0"

from . import zoo  # noqa: E402,F401  (sslzoo.zoo is the top-level zoo/ folder)
