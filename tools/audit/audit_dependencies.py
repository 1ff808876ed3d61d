"""pip-audit over the locked dependencies (constraints.txt), honest about what it could check.

pip-audit asks a vulnerability database about every pinned package. When the database cannot
be reached (no route to it, or a mirror that serves the package index but not PyPI's JSON API)
it skips the package, and without --strict still ends with "No known vulnerabilities found".
This wrapper reads pip-audit's JSON report instead and says which case it is:

  exit 0  every package was checked and none has a known vulnerability
  exit 1  known vulnerabilities (listed with their ids and fixed versions)
  exit 2  vulnerability database unreachable, or some packages not checked: audit NOT performed
          (or incomplete), which is never reported as clean

  .venv/bin/python tools/audit/audit_dependencies.py [--service pypi|osv] [--requirements FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_PERFORMED = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi", help="vulnerability database")
    parser.add_argument("--pip-audit", default=str(Path(sys.executable).parent / "pip-audit"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # fully pinned, so no resolution (--no-deps); not --strict, so one unreachable package
        # does not hide what the others say: the report tells which were skipped
        result = subprocess.run(
            [args.pip_audit, "--requirement", str(args.requirements), "--no-deps", "--vulnerability-service",
             args.service, "--format", "json", "--output", str(report), "--progress-spinner", "off"],
            capture_output=True, text=True, check=False,
        )
        text = report.read_text() if report.exists() else ""
    if not text.strip():
        print(result.stderr.strip()[-2000:], file=sys.stderr)
        print(f"vulnerability database unreachable ({args.service}) or pip-audit failed "
              f"(exit {result.returncode}): audit NOT performed", file=sys.stderr)
        return NOT_PERFORMED

    dependencies = json.loads(text)["dependencies"]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(f"{dep['name']} {dep['version']}: {vuln['id']}{f' ({aliases})' if aliases else ''}; fixed in {fixed}")
    checked = len(dependencies) - len(skipped)
    if skipped and checked == 0:
        print(f"vulnerability database unreachable ({args.service}): none of the {len(dependencies)} locked "
              f"packages could be checked ({skipped[0]['skip_reason']}, ...): audit NOT performed", file=sys.stderr)
        return NOT_PERFORMED
    if skipped:
        for dep in skipped:
            print(f"not checked: {dep['name']} {dep.get('version', '')}: {dep['skip_reason']}", file=sys.stderr)
        print(f"{len(skipped)} of {len(dependencies)} locked packages could not be checked: audit INCOMPLETE",
              file=sys.stderr)
        return NOT_PERFORMED if not vulnerable else 1
    if vulnerable:
        print(f"{len(vulnerable)} of {len(dependencies)} locked packages have known vulnerabilities")
        return 1
    print(f"no known vulnerabilities in the {len(dependencies)} locked packages ({args.service} database)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
