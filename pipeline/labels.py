"""The label of a WebDataset sample, from its `cls`, `txt` or `json` member (the forms `pipeline.tars` lists), and
what makes a text a wnid."""

import json
import re

MAX_CLASSES = 32768  # labels are stored as int16
MAX_WNID = 256
WORDNET_ID = re.compile(r"n[0-9]{8}", re.ASCII)  # ImageNet's class names: a WordNet noun synset


class BadLabel(ValueError):
    pass


def parse_label(ext: str, data: bytes, bound: int = MAX_CLASSES) -> str | int:
    """The label in a `cls`, `txt` or `json` member's bytes (the forms in the module docstring), or BadLabel."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadLabel(f"not UTF-8 text: {short(data)}") from None
    if ext == "cls":
        digits = text.strip()
        if not re.fullmatch(r"-?[0-9]+", digits):
            raise BadLabel(f"not an integer class index: {short(text)}")
        return _index(int(digits) if len(digits) <= 12 else bound, bound, digits)  # longer: out of range
    if ext == "txt":
        words = text.split(maxsplit=1)
        if not words:
            raise BadLabel(f"no word in the text: {short(text)}")
        return _wnid(words[0])
    try:
        value = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any text: ValueError, RecursionError on deep nesting, ...
        raise BadLabel(f"not JSON ({type(e).__name__}): {short(text)}") from None
    if isinstance(value, str):
        return _wnid(value)
    if isinstance(value, dict) and "wnid" in value:
        return _wnid(value["wnid"], text)
    if isinstance(value, dict) and "cls" in value:
        if not isinstance(value["cls"], int) or isinstance(value["cls"], bool):
            raise BadLabel(f'"cls" is not an integer: {short(text)}')
        return _index(value["cls"], bound, text)
    raise BadLabel(f'neither a wnid string nor an object with "wnid" or "cls": {short(text)}')


def _index(value: int, bound: int, found: str) -> int:
    if not 0 <= value < bound:
        raise BadLabel(f"class index out of [0, {bound}): {short(found)}")
    return value


def _wnid(value, found: str | None = None) -> str:
    """value if it is a wnid; found: the text it came from, shown instead (a JSON value may nest deeply)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_WNID or not value.isprintable() or " " in value:
        shown = short(found if found is not None else value)
        raise BadLabel(f"not a wnid (1 to {MAX_WNID} printable characters, no spaces): {shown}")
    return value


def short(value, n: int = 60) -> str:
    """repr of a value found in a source, cut to about n characters."""
    text = repr(value[: n + 1] if isinstance(value, str | bytes) else value)
    return text if len(text) <= n else text[: n - 3] + "..."
