# Flash filesystem adapter for small text files (the config, the safe-boot
# flag). write_atomic
# writes a temporary file and renames it over the target: on the ESP32's
# littlefs and on POSIX a rename replaces the file in one step, so a power
# cut leaves the old or the new content, never a mix.

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

    def read(self, name):
        with open(self._path(name)) as f:
            return f.read()

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
