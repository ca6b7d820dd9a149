"""Counts of pytest JUnit XML reports, for .ci/run's summary.

    python .ci/junit_counts.py REPORT.xml            -> "12 passed, 0 failed, 1 skipped"
    python .ci/junit_counts.py --total A.xml B.xml   -> "total: 30 passed, 0 failed, 1 skipped"
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def counts(report: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of one report; errors count as failed; a missing report counts nothing."""
    if not report.is_file():
        return 0, 0, 0
    root = ElementTree.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def main(arguments: list[str]) -> None:
    total = arguments[:1] == ["--total"]
    reports = [Path(argument) for argument in (arguments[1:] if total else arguments[:1])]
    passed, failed, skipped = (sum(column) for column in zip((0, 0, 0), *(counts(report) for report in reports)))
    print(f"{'total: ' if total else ''}{passed} passed, {failed} failed, {skipped} skipped")


if __name__ == "__main__":
    main(sys.argv[1:])
