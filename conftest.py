"""Shared pytest set-up: tests and notebook runs use the tiny offline profile unless told otherwise.

Set before any kernel starts, so nbval's notebook kernels inherit it too.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("SMART_BATCHING_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
# Notebook kernels and the tests' subprocesses import this checkout too, whatever else is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
