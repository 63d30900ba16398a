"""Lets `python -m pytest tests/python` run from a checkout without `pip install -e schemas/python`."""
import sys
from pathlib import Path

try:
    import fusion_events  # noqa: F401  (installed: use it)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "schemas" / "python"))
