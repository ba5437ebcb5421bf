"""Which files below a store folder are the store's own: the only ones a run ever deletes (`--overwrite`, an array
rewritten, the staging area cleared at the end).

A file is the store's own when the store's metadata accounts for it, whatever its depth:
- the group's `zarr.json` and the manifest `sources.jsonl`;
- each array's `NAME/zarr.json` (NAME one of the store's arrays) and its chunk keys `NAME/c/i/j...`, one index per
  dimension within the chunk grid that array's own `zarr.json` gives (shards, for the sharded arrays);
- the staging area's files: `_staging/config.json`, `lease.json`, `part-NNNNNN.json`, `parts/NNNNNN.json`, the
  write probe `.write-check`, and the temp files of this project's writes (`.NAME.tmpPID-TID`) and of zarr's
  (`NAME.<32 hex>.partial`) beside them.
Anything else (another file, a link, a folder no own file lies in) is foreign, and a run that would delete it
refuses, in one line naming the first. Metadata that does not parse accounts for nothing, so a damaged or hostile
`zarr.json` never widens what may be deleted.
"""

import re

from pipeline.storage import location
from pipeline.store.format import ARRAYS, INDEX, MANIFEST, STAGING, StoreError, read_meta

LEASE = "lease.json"
STAGED = re.compile(r"(config\.json|lease\.json|\.write-check|part-\d{6,}\.json|parts/\d{6,}\.json)")
TEMP = re.compile(r"(.*/)?\.[^/]+\.tmp\d+(-\d+)?")  # pipeline.storage.files.atomic_write's temp names
PARTIAL = re.compile(r"(.*/)?[^/]+\.[0-9a-f]{32}\.partial")  # zarr-python's temp names (LocalStore)


def chunk_grids(store) -> dict[str, tuple[int, ...]]:
    """{array name: chunks (or shards) along each dimension} of the store's arrays whose zarr.json parses into a
    plain regular grid of whole numbers; an array whose metadata does not parse is left out."""
    store = location(store)
    grids = {}
    for name in ARRAYS:
        try:
            meta = read_meta(store / name / "zarr.json")
            shape = meta["shape"]
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
            encoding = meta.get("chunk_key_encoding", {"name": "default"})
        except (StoreError, OSError, KeyError, TypeError):
            continue
        whole = lambda v: isinstance(v, list) and all(type(x) is int and x >= 0 for x in v)  # noqa: E731
        if not (whole(shape) and whole(chunks) and len(shape) == len(chunks) and 0 not in chunks):
            continue
        separator = encoding.get("configuration", {}).get("separator", "/") if isinstance(encoding, dict) else None
        if not isinstance(encoding, dict) or encoding.get("name") != "default" or separator != "/":
            continue
        grids[name] = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    return grids


def _in_grid(parts: list[str], grid: tuple[int, ...], whole: bool) -> bool:
    """Whether `parts` (after NAME/c) are indices within `grid`: all of them (a chunk key), or a leading run of
    them (a local folder on the way to one)."""
    if len(parts) > len(grid) or (whole and len(parts) != len(grid)):
        return False
    return all(INDEX.fullmatch(p) and int(p) < n for p, n in zip(parts, grid, strict=False))


def is_own(key: str, grids: dict[str, tuple[int, ...]], folder: bool = False) -> bool:
    """Whether the file (or, folder=True, the local folder) at `key` below a store is the store's own."""
    parts = key.split("/")
    if folder:
        if parts[0] == STAGING:
            return parts[1:] in ([], ["parts"])
        grid = grids.get(parts[0])
        return grid is not None and (parts[1:] == [] or (parts[1] == "c" and _in_grid(parts[2:], grid, False)))
    if parts[0] == STAGING:
        rest = "/".join(parts[1:])
        return bool(STAGED.fullmatch(rest)) or (bool(TEMP.fullmatch(rest)) and len(parts) <= 3)
    if PARTIAL.fullmatch(key):  # zarr's temp file of `zarr.json` (zarr.<hex>.partial) or of chunk `0` (0.<hex>...)
        target = key[: key.rindex(".", 0, key.rindex("."))]
        return _own_file(target, grids) or _own_file(f"{target}.json", grids)
    return _own_file(key, grids)


def _own_file(key: str, grids: dict[str, tuple[int, ...]]) -> bool:
    if key in ("zarr.json", MANIFEST):
        return True
    parts = key.split("/")
    grid = grids.get(parts[0])
    if grid is None or len(parts) < 2:
        return False
    if parts[1:] == ["zarr.json"] or (grid == () and parts[1:] == ["c"]):
        return True
    return parts[1] == "c" and _in_grid(parts[2:], grid, True)


def listing(store) -> tuple[list[str], list[str]]:
    """(files, local folders) below a store, as keys relative to it, sorted; links count as files (never
    followed)."""
    keys, folders = location(store).tree()
    twice = {k for k, n in zip(keys, keys[1:], strict=False) if k == n}
    # a key listed twice is one obstore names like another ("a/b/", a folder marker, lists as "a/b"): foreign
    return [k if k not in twice else f"{k} (listed twice: a folder marker?)" for k in dict.fromkeys(keys)], folders


def foreign(store) -> list[str]:
    """The files and folders below a store folder that are not the store's own (links included), sorted."""
    store = location(store)
    grids = chunk_grids(store)
    files, folders = listing(store)
    out = [f for f in files if not is_own(f, grids) or _is_link(store, f)]
    out += [f"{d}/" for d in folders if not is_own(d, grids, folder=True)]
    return sorted(out)


def _is_link(store, key: str) -> bool:
    return (location(store) / key).is_symlink()


def refuse_foreign(store, found: list[str], doing: str) -> None:
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise StoreError(f"{location(store)} holds files that are not the store's own ({shown}); {doing} deletes "
                         "only what the store's metadata accounts for: move them or choose another STORE")  # fmt: skip


def remove_own(store, below: tuple[str, ...] = (), keep: tuple[str, ...] = (), strict: bool = True) -> list[str]:
    """Delete the store's own files (only those below the folders `below`, if given; not those in `keep`), then
    the local folders left empty. strict: refuse, deleting nothing, when a foreign file lies there; else leave it
    and return what was left."""
    store = location(store)
    grids = chunk_grids(store)
    files, folders = listing(store)
    inside = lambda k: not below or any(k == b or k.startswith(b + "/") for b in below)  # noqa: E731
    files, folders = [f for f in files if inside(f)], [d for d in folders if inside(d)]
    alien = [f for f in files if not is_own(f, grids) or _is_link(store, f)]
    alien += [f"{d}/" for d in folders if not is_own(d, grids, folder=True)]
    if strict:
        refuse_foreign(store, alien, "replacing the store")
    doomed = [f for f in files if f not in alien and f not in keep]
    store.delete_keys([store / k for k in doomed])
    for d in sorted(folders, key=lambda d: -d.count("/")):  # a disk's folders, the deepest first
        (store / d).remove_empty()  # one that is not empty keeps something
    return alien
