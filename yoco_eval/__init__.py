"""yoco-eval: a long-context evaluation harness around a full YOCO implementation."""

__version__ = "0.1.0"
