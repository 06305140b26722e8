"""Peak memory and rate of ``destination replay --dry-run`` over generated events.

Run by hand, not by the test suite::

    .venv/bin/python bench/replay_memory.py [--events 1000000]

It writes the events as gzipped JSON lines (several gzip members, as
concatenated archives have) into a temporary directory, streaming them so
the generator itself stays small; runs the real command as a child process;
and reports events per second and the child's peak resident memory against
the 200 MB target. In the same run it times ``gzip -dc FILE | wc -l`` over the
same file, so the rate reads as a ratio to a baseline measured on the same
machine at the same moment, not as a bare number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MB = 200.0
EVENTS_PER_MEMBER = 100_000
LINES_PER_WRITE = 5_000


def write_events(path: Path, count: int) -> int:
    """Write ``count`` mapped track events; return the uncompressed size."""
    size = 0
    with path.open("wb") as raw:
        for start in range(0, count, EVENTS_PER_MEMBER):
            stop = min(count, start + EVENTS_PER_MEMBER)
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as member:
                for chunk in range(start, stop, LINES_PER_WRITE):
                    block = _lines(chunk, min(stop, chunk + LINES_PER_WRITE))
                    member.write(block)
                    size += len(block)
    return size


def _lines(start: int, stop: int) -> bytes:
    return b"".join(_event(number) + b"\n" for number in range(start, stop))


def _event(number: int) -> bytes:
    hour, minute = number // 60 % 24, number % 60
    event = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"bench-{number:09d}",
        "userId": f"user-{number % 50_000}",
        "timestamp": f"2024-05-01T{hour:02d}:{minute:02d}:00Z",
        "properties": {"orderId": f"o-{number}", "total": number % 997},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def run_replay(archive: Path, workdir: Path) -> tuple[float, dict[str, object]]:
    """Seconds taken and the summary of ``replay --dry-run --json``."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'absent.db'}",
        "DESTINATION_MAPPINGS": str(REPO / "tests" / "data" / "mappings"),
    }
    command = [
        sys.executable,
        "-m",
        "destination",
        "replay",
        "--dry-run",
        "--json",
        str(archive),
    ]
    started = time.perf_counter()
    finished = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    summaries = [
        json.loads(line)
        for line in finished.stdout.decode().splitlines()
        if line.startswith('{"kind": "summary"')
    ]
    if finished.returncode != 0 or len(summaries) != 1:
        sys.exit(f"replay failed ({finished.returncode}):\n{finished.stderr.decode()}")
    return seconds, summaries[0]


def peak_child_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the largest of the children waited for.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_baseline(archive: Path) -> float:
    """Seconds for ``gzip -dc | wc -l``: only decompressing and counting lines."""
    started = time.perf_counter()
    subprocess.run(
        ["bash", "-c", 'gzip -dc "$1" | wc -l', "bash", str(archive)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="replay-bench-") as folder:
        workdir = Path(folder)
        archive = workdir / "events.jsonl.gz"
        written = write_events(archive, args.events)
        seconds, summary = run_replay(archive, workdir)
        peak = peak_child_rss_mb()
        baseline = run_baseline(archive)
        compressed = archive.stat().st_size

    rate = args.events / seconds
    baseline_rate = args.events / baseline
    verdict = "within" if peak <= TARGET_MB else "OVER"
    print(f"events                {args.events:,}")
    print(
        f"archive               {compressed / 1e6:.1f} MB gzip "
        f"({written / 1e6:.1f} MB of JSON lines)"
    )
    print(
        f"replay --dry-run      {seconds:8.1f} s  {rate:12,.0f} events/s  "
        f"peak RSS {peak:.1f} MB ({verdict} the {TARGET_MB:.0f} MB target)"
    )
    print(f"gzip -dc | wc -l      {baseline:8.1f} s  {baseline_rate:12,.0f} events/s")
    print(
        f"ratio                 replay / baseline = {rate / baseline_rate:.4f} "
        f"(baseline is {baseline_rate / rate:.0f}x faster)"
    )
    print(f"summary               {json.dumps(summary)}")
    accepted = summary.get("accepted")
    if accepted != args.events:
        print(f"unexpected: {accepted} events accepted of {args.events}")
        return 1
    return 0 if peak <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
