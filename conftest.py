"""Shared pytest set-up: tests and notebook runs use the tiny offline profile unless told otherwise.

Set before any kernel starts, so nbval's notebook kernels inherit it too.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("SMART_BATCHING_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
