"""The listings of an object store prefix, as `ObjectPath` gives them: one request per thousand keys, its
prefixes taken for folders (`LocalPath` answers the same questions from the file system)."""

import fnmatch

from pipeline.storage.client import errors


class Listing:
    """The listing methods of `ObjectPath` (its scheme, bucket, key, options and client)."""

    def iterdir(self):
        """The objects and prefixes directly below this one."""
        folders, files = self.entries()
        return [self / n for n in sorted({*folders, *files}) if n]

    def subfolders(self) -> list[str]:
        """The names of the prefixes directly below this one (one listing)."""
        return self.entries()[0]

    def entries(self) -> tuple[list[str], list[str]]:
        """(prefix names, object names) directly below: one listing."""
        import obstore

        with errors(self):
            listing = obstore.list_with_delimiter(self.client, prefix=self._prefix() or None)
        folders = [p.rstrip("/").rpartition("/")[2] for p in listing["common_prefixes"]]
        return folders, [o["path"].rpartition("/")[2] for o in listing["objects"]]

    def _objects(self, chunk_size: int = 10_000):
        """Every object below this prefix (obstore's dicts), in the server's pages of chunk_size."""
        import obstore

        with errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=chunk_size):
                yield from batch

    def walk_files(self) -> list["Listing"]:
        """Every object below this prefix, sorted by key."""
        keys = sorted(o["path"] for o in self._objects())
        return [type(self)(self.scheme, self.bucket, k, self.options) for k in keys]

    def files_below(self) -> list[str]:
        """Every non-hidden object below, as keys relative to this prefix, sorted."""
        cut = len(self.key) + 1 if self.key else 0
        found = (p.key[cut:] for p in self.walk_files())
        return sorted(k for k in found if not any(part.startswith(".") for part in k.split("/")))

    def tree(self) -> tuple[list[str], list[str]]:
        """(every key below, relative, sorted: one listed twice appears twice; no folders: prefixes are not things)."""
        cut = len(self.key) + 1 if self.key else 0
        return sorted(p.key[cut:] for p in self.walk_files()), []

    def has_files(self) -> bool:
        """Whether any non-hidden object lies below this prefix."""
        cut = len(self._prefix())
        return any(not any(part.startswith(".") for part in o["path"][cut:].split("/")) for o in self._objects(1000))

    def glob(self, pattern: str):
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def _prefix(self) -> str:
        return f"{self.key}/" if self.key else ""

    def listed(self) -> dict[str, tuple[int, str]]:
        """{key below this prefix: (its size, its identity: the ETag, else size and time)}, from one listing."""
        out, cut = {}, len(self._prefix())
        for o in self._objects():
            out[o["path"][cut:]] = (o["size"], o.get("e_tag") or f"{o['size']}-{o['last_modified'].timestamp():.6f}")
        return out
