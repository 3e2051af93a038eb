# Flash filesystem adapter for small text files (the config, the safe-boot
# flag). read() is bounded and decodes explicitly, so a damaged or huge file
# is a clear error, not a MemoryError or a stray byte deep in json.
# write_atomic writes a temporary file and renames it over the target: on the
# ESP32's littlefs and on POSIX a rename replaces the file in one step, so a
# power cut leaves the old or the new content, never a mix.

import os


class FileStore:
    def __init__(self, root=""):
        self.root = root

    def _path(self, name):
        return self.root + "/" + name if self.root else name

    def exists(self, name):
        try:
            os.stat(self._path(name))
            return True
        except OSError:
            return False

    def remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass

    def read(self, name, limit=None):
        """The file's text; ValueError when it is longer than limit bytes,
        UnicodeError (a ValueError) when it is not UTF-8."""
        with open(self._path(name), "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise ValueError("larger than %d bytes" % limit)
        return data.decode()

    def write_atomic(self, name, text):
        path = self._path(name)
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
            if hasattr(f, "flush"):
                f.flush()
        try:
            os.rename(tmp, path)
        except OSError:
            # some filesystems refuse to rename over an existing file
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)
