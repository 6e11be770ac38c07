"""Reads deploy/kubernetes/*.yaml with PyYAML and prints them as one JSON list of documents,
for tests/kubernetes.rs to check."""

import json
import sys
from pathlib import Path

import yaml

docs = []
for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
    with path.open() as f:
        docs.extend(d for d in yaml.safe_load_all(f) if d)
print(json.dumps(docs))
