// Copying host folders into the Emscripten file system of the MicroPython webassembly port, for
// host_tests/run_wasm.mjs (the portable tests) and host/ram_wasm.mjs (make ram).
import fs from "node:fs";
import path from "node:path";

const SKIP = new Set(["__pycache__", ".pytest_cache", ".hypothesis"]);

// Create vdir and its parents in FS.
export function mkdirs(FS, vdir) {
  let cur = "";
  for (const part of vdir.split("/").filter(Boolean)) {
    cur += "/" + part;
    if (!FS.analyzePath(cur).exists) FS.mkdir(cur);
  }
}

// Copy the host folder src to dst in FS (caches, hidden files and .pyc left out).
export function mirror(FS, src, dst) {
  mkdirs(FS, dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (SKIP.has(ent.name) || ent.name.startsWith(".") || ent.name.endsWith(".pyc")) continue;
    const s = path.join(src, ent.name);
    const d = `${dst}/${ent.name}`;
    if (ent.isDirectory()) mirror(FS, s, d);
    else if (ent.isFile()) FS.writeFile(d, fs.readFileSync(s));
  }
}
