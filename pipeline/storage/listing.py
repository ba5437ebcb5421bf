"""The listings of an object store prefix, as `ObjectPath` gives them: one request per thousand keys, its
prefixes taken for folders (`LocalPath` answers the same questions from the file system)."""

import fnmatch

from pipeline.storage.client import errors


class Listing:
    """The listing methods of `ObjectPath` (its scheme, bucket, key, options and client)."""

    def iterdir(self):
        """The objects and prefixes directly below this one."""
        listing = self._listing()
        names = [p.rstrip("/").rpartition("/")[2] for p in listing["common_prefixes"]]
        names += [o["path"].rpartition("/")[2] for o in listing["objects"]]
        return [self / n for n in sorted(set(names)) if n]

    def subfolders(self) -> list[str]:
        """The names of the prefixes directly below this one (one listing)."""
        return [p.rstrip("/").rpartition("/")[2] for p in self._listing()["common_prefixes"]]

    def iterfiles(self) -> list["Listing"]:
        """The objects directly below this prefix (one listing)."""
        return [type(self)(self.scheme, self.bucket, o["path"], self.options) for o in self._listing()["objects"]]

    def _listing(self) -> dict:
        import obstore

        with errors(self):
            return obstore.list_with_delimiter(self.client, prefix=self._prefix() or None)

    def walk_files(self) -> list["Listing"]:
        """Every object below this prefix, sorted by key."""
        import obstore

        keys = []
        with errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=10_000):
                keys += [o["path"] for o in batch]
        return [type(self)(self.scheme, self.bucket, k, self.options) for k in sorted(keys)]

    def entries(self) -> tuple[list[str], list[str]]:
        """(prefix names, object names) directly below: one listing."""
        listing = self._listing()
        folders = [p.rstrip("/").rpartition("/")[2] for p in listing["common_prefixes"]]
        return folders, [o["path"].rpartition("/")[2] for o in listing["objects"]]

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
        import obstore

        with errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=1000):
                for o in batch:
                    if not any(part.startswith(".") for part in o["path"][len(self._prefix()) :].split("/")):
                        return True
        return False

    def glob(self, pattern: str):
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def _prefix(self) -> str:
        return f"{self.key}/" if self.key else ""

    def listed(self) -> dict[str, tuple[int, str]]:
        """{key below this prefix: (its size, its identity: the ETag, else size and time)}, from one listing."""
        import obstore

        out, cut = {}, len(self._prefix())
        with errors(self):
            for batch in obstore.list(self.client, prefix=self._prefix() or None, chunk_size=10_000):
                for o in batch:
                    ident = o.get("e_tag") or f"{o['size']}-{o['last_modified'].timestamp():.6f}"
                    out[o["path"][cut:]] = (o["size"], ident)
        return out
