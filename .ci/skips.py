"""Count the skipped tests of a JUnit XML report; fail on a skip not for CUDA or Chromium.

Usage: ``python .ci/skips.py REPORT.xml``. Exit status 1 (with the reason) when the
report holds no tests or a test was skipped for any other reason.
"""

import re
import sys
import xml.etree.ElementTree as ET

#: The only reasons a test may skip for: no CUDA device, no Chromium browser.
ALLOWED = re.compile(r"\bCUDA\b|\bChromium\b", re.IGNORECASE)


def main(report: str) -> int:
    """Print the skip count and each skip; 1 if a skip is not allowed or there are no tests."""
    cases = list(ET.parse(report).getroot().iter("testcase"))
    skipped = [(case, skip) for case in cases for skip in case.findall("skipped")]
    print(f"ci: {len(cases)} tests, {len(skipped)} skipped")
    bad = []
    for case, skip in skipped:
        reason = skip.get("message") or skip.text or ""
        name = f"{case.get('classname')}::{case.get('name')}"
        print(f"ci:   skipped {name}: {reason}")
        if not ALLOWED.search(reason):
            bad.append(name)
    if not cases:
        print("ci: the report holds no tests", file=sys.stderr)
        return 1
    if bad:
        print(
            f"ci: {len(bad)} tests skipped for a reason other than no CUDA or no Chromium",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
