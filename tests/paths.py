"""Where the tests find the repository's files and the shared fixtures."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EVENT_FIXTURES = SHARED / "fixtures" / "events"
REPLAY_FIXTURES = SHARED / "fixtures" / "replay"
SCHEMAS = REPO / "schemas"
EXAMPLE_MAPPINGS = REPO / "examples" / "mappings"
