#!/usr/bin/env python3
"""Create adclick's Kafka topics: a wrapper of adclick.topics (see its --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # works without pip install -e

from adclick.topics import main  # noqa: E402

main()
