"""What the benchmark tests check of every report they make: that it names no path of the machine that measured
(reports are committed and read on other machines)."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def machine_paths(text: str) -> list[str]:
    """The absolute paths of this machine in text: a root folder's name after a '/' that starts a path."""
    tops = "|".join(re.escape(t) for t in os.listdir("/"))
    return re.findall(rf"(?<![\w.:/-])(?:file://)?/(?:{tops})(?:/[^\s\"'|,;()]*)?(?=[\s\"'|,;().:]|$)", text)


def assert_no_machine_paths(folder: Path) -> None:
    """Every report file in folder names no path of this machine."""
    for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.md")):
        text = f.read_text()
        assert not machine_paths(text), (f.name, machine_paths(text))
        assert str(ROOT) not in text and str(folder) not in text, f.name
