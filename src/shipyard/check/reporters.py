"""A report for people (an aligned table), for programs (JSON) and for CI (JUnit XML).

JUnit mapping: one ``<testcase>`` per check, ``classname`` ``shipyard.check.<stage>``;
FAIL -> ``<failure>`` (message = what failed, text = detail, fix and rule), SKIP ->
``<skipped>``, WARN -> a passing case whose ``<system-out>`` says WARN (CI tools have no
warning state).
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

from shipyard.check.model import CheckResult, Report, Status

__all__ = ["render_json", "render_junit", "render_table"]

_STYLE = {Status.PASS: "green", Status.FAIL: "red", Status.WARN: "yellow", Status.SKIP: "blue"}
#: Shortest detail column before the table stops wrapping nicely.
_MIN_DETAIL = 30


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2)


def _style(text: str, status: Status, color: bool) -> str:
    if not color:
        return text
    import click

    return click.style(text, fg=_STYLE[status], bold=status is Status.FAIL)


def render_table(report: Report, *, width: int = 100, color: bool = False) -> str:
    """Check, result, what was seen or failed and, under failures and warnings, the fix."""
    id_width = max(len(r.check.id) for r in report.results)
    detail_width = max(_MIN_DETAIL, width - id_width - 10)
    indent = " " * (id_width + 12)
    lines = [f"shipyard check {report.image}"
             + (f" ({report.image_id[:19]})" if report.image_id else ""), ""]
    lines.append(f"  {'CHECK'.ljust(id_width)}  RESULT  DETAIL / FIX")
    for result in report.results:
        detail = _wrap(result.detail or result.check.title, detail_width)
        status = _style(result.status.value.ljust(6), result.status, color)
        lines.append(f"  {result.check.id.ljust(id_width)}  {status}  {detail[0]}")
        lines += [indent + line for line in detail[1:]]
        fix = result.how_to_fix
        if fix:
            lines += [indent + line for line in _wrap("fix: " + fix, detail_width)]
    counts = report.counts()
    summary = (f"{len(report.results)} checks: {counts['PASS']} passed, {counts['FAIL']} "
               f"failed, {counts['WARN']} warned, {counts['SKIP']} skipped "
               f"({report.seconds:.1f} s)")
    verdict = Status.FAIL if report.failed else Status.PASS
    lines += ["", _style(summary, verdict, color)]
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for paragraph in text.splitlines() or [""]:
        out += textwrap.wrap(paragraph, width, break_long_words=True,
                             break_on_hyphens=False) or [""]
    return out


def _case_text(result: CheckResult) -> str:
    parts = [result.detail]
    if result.how_to_fix:
        parts.append(f"How to fix: {result.how_to_fix}")
    parts.append(f"Rule: {result.check.rule}")
    return "\n".join(p for p in parts if p)


def render_junit(report: Report) -> str:
    counts = report.counts()
    suite = ET.Element("testsuite", {
        "name": f"shipyard check {report.image}",
        "tests": str(len(report.results)),
        "failures": str(counts["FAIL"]),
        "errors": "0",
        "skipped": str(counts["SKIP"]),
        "time": f"{report.seconds:.3f}",
    })
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", {"name": "image", "value": report.image})
    ET.SubElement(properties, "property", {"name": "image_id", "value": report.image_id})
    for result in report.results:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"shipyard.check.{result.check.stage.value}",
            "name": result.check.id,
            "time": f"{result.seconds:.3f}",
        })
        first_line = (result.detail.splitlines() or [result.check.title])[0]
        if result.status is Status.FAIL:
            failure = ET.SubElement(case, "failure", {"message": first_line,
                                                      "type": result.check.id})
            failure.text = _case_text(result)
        elif result.status is Status.SKIP:
            ET.SubElement(case, "skipped", {"message": first_line})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{result.status.value}: {_case_text(result)}"
    suites = ET.Element("testsuites", {
        "name": "shipyard check",
        "tests": suite.get("tests", "0"),
        "failures": suite.get("failures", "0"),
        "errors": "0",
        "skipped": suite.get("skipped", "0"),
        "time": suite.get("time", "0"),
    })
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"
