#!/usr/bin/env python3
"""Counts the results in meson testlog.json files: a TAP test (a bats file)
counts each of its test points; any other test counts once.
Prints "PASSED FAILED SKIPPED" on stdout, and on stderr what each failed test
point printed (its "not ok" line and the diagnostics after it), so that a red
run says why."""
import json
import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout") or ""
            points = re.findall(r"^(ok|not ok) \d+[^\n]*", out, re.M)
            if re.search(r"^1\.\.\d+", out, re.M):
                for p in re.finditer(r"^(ok|not ok) \d+([^\n]*)", out, re.M):
                    if "# skip" in p.group(2).lower():
                        skipped += 1
                    elif p.group(1) == "ok":
                        passed += 1
                    else:
                        failed += 1
                        # The point's diagnostics: its "# " lines that follow.
                        block = re.match(r"[^\n]*\n(?:#[^\n]*\n?)*", out[p.start():])
                        sys.stderr.write(f"{t['name']}: {block.group(0)}")
                planned = int(re.search(r"^1\.\.(\d+)", out, re.M).group(1))
                # A suite that died before finishing its plan counts the rest as failed.
                failed += max(0, planned - len(points))
                if t["result"] not in ("OK", "SKIP") and not any(p.startswith("not ok") for p in points) and planned == len(points):
                    failed += 1
            elif t["result"] in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif t["result"] == "SKIP":
                skipped += 1
            else:
                failed += 1
print(passed, failed, skipped)
