#!/usr/bin/env python3
"""Renders CryLab's HTML reports in headless Chromium and fails on anything a reader would miss.

Usage:
  check_report.py REPORT.html [REPORT.html ...] [--png-dir DIR]
  check_report.py --demo [--crylab .build/release/crylab] [--png-dir DIR]

For every report:
  1. each inline <svg> must be closed and well-formed XML (the HTML parser would silently
     repair it), and each data:image/png must decode to a PNG;
  2. Chromium renders it to DIR/<name>.png at 1200x2400 with its log on stderr: any line of the
     page's console (a JavaScript error, a console.error, a failed resource) fails the check;
  3. Chromium's DOM after parsing must hold as many <svg> elements as the file: a tag the
     parser dropped or swallowed fails the check.
`--demo` first runs `crylab demo` into a temporary folder and checks both of its reports.
Exit status 0 when every report passes, 1 otherwise; each problem is printed with its report.
Python 3 standard library only.
"""
import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

CHROMIUM = "/usr/bin/chromium"
# Chromium logs every console message of the page as "...:INFO:CONSOLE(line)] "text", source: url (line)".
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")


def static_problems(html):
    problems = []
    opened, closed = len(re.findall(r"<svg\b", html)), html.count("</svg>")
    if opened != closed:
        problems.append(f"{opened} <svg> tags but {closed} </svg>")
    for index, match in enumerate(re.finditer(r"<svg\b.*?</svg>", html, re.S)):
        if re.search(r"<svg\b", match.group(0)[4:]):
            problems.append(f"svg {index + 1} holds another <svg>: a </svg> is missing")
            continue
        try:
            ElementTree.fromstring(match.group(0))
        except ElementTree.ParseError as error:
            problems.append(f"svg {index + 1} is not well-formed XML: {error}")
    for index, match in enumerate(re.finditer(r'data:image/png;base64,([^"]*)"', html)):
        try:
            data = base64.b64decode(match.group(1), validate=True)
        except ValueError as error:
            problems.append(f"image {index + 1}: bad base64 ({error})")
            continue
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
            problems.append(f"image {index + 1}: not a PNG (starts {data[:16]!r})")
    if html.count("<svg") == 0 and html.count("<img") == 0:
        problems.append("no chart and no image at all")
    return problems


def chromium(arguments, profile):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               f"--user-data-dir={profile}", "--no-first-run", "--hide-scrollbars"] + arguments
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def check(report, png_dir):
    """Returns (problems, png path)."""
    with open(report, encoding="utf-8") as file:
        html = file.read()
    problems = static_problems(html)
    url = "file://" + os.path.abspath(report)
    name = os.path.basename(os.path.dirname(os.path.abspath(report))) + "-" + os.path.splitext(os.path.basename(report))[0]
    png = os.path.join(png_dir, name + ".png")
    with tempfile.TemporaryDirectory(prefix="crylab-chromium-") as profile:
        if os.path.exists(png):
            os.remove(png)
        shot = chromium([f"--screenshot={png}", "--window-size=1200,2400", url], profile)
        console = [line for line in shot.stderr.splitlines() if CONSOLE_LINE.search(line)]
        problems += [f"console: {line.split('] ', 1)[-1]}" for line in console]
        if shot.returncode != 0:
            problems.append(f"chromium exited with {shot.returncode}: {shot.stderr[-500:]}")
        if not os.path.exists(png) or os.path.getsize(png) == 0:
            problems.append(f"no screenshot written to {png}")
        dom = chromium(["--dump-dom", url], profile)
        rendered = len(re.findall(r"<svg\b", dom.stdout))
        written = len(re.findall(r"<svg\b", html))
        if rendered != written:
            problems.append(f"the file has {written} <svg> elements, Chromium's DOM {rendered}")
    return problems, png


def run_demo(crylab, folder):
    output = subprocess.run([crylab, "demo", "--output", folder], capture_output=True, text=True)
    if output.returncode != 0:
        sys.exit(f"crylab demo failed ({output.returncode}):\n{output.stderr[-2000:]}")
    return [os.path.join(folder, "pretrain", "report.html"), os.path.join(folder, "finetune", "report.html")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="*", help="report.html files")
    parser.add_argument("--demo", action="store_true", help="run `crylab demo` and check both of its reports")
    parser.add_argument("--crylab", default=".build/release/crylab", help="the crylab executable for --demo")
    parser.add_argument("--png-dir", default=None, help="where the screenshots go (default: a new temporary folder)")
    arguments = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} not found: install Debian's chromium package")
    png_dir = arguments.png_dir or tempfile.mkdtemp(prefix="crylab-report-png-")
    os.makedirs(png_dir, exist_ok=True)
    reports = list(arguments.reports)
    if arguments.demo:
        reports += run_demo(arguments.crylab, tempfile.mkdtemp(prefix="crylab-demo-"))
    if not reports:
        parser.error("give report.html files or --demo")
    failed = False
    for report in reports:
        problems, png = check(report, png_dir)
        status = "ok" if not problems else "FAILED"
        print(f"{status}: {report} -> {png}")
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
