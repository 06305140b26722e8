"""Where the tests find the repository's files and the shared fixtures."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def find_shared(repo: Path) -> Path:
    """``../shared`` when it holds fixtures (it wins), else the vendored copy."""
    beside = repo.parent / "shared"
    return beside if (beside / "fixtures").is_dir() else repo / "tests" / "shared"


SHARED = find_shared(REPO)
EVENT_FIXTURES = SHARED / "fixtures" / "events"
REPLAY_FIXTURES = SHARED / "fixtures" / "replay"
SCHEMAS = REPO / "schemas"
EXAMPLE_MAPPINGS = REPO / "examples" / "mappings"
