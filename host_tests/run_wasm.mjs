// Run portable tests under the MicroPython webassembly port (32-bit object model, like the ESP32).
//
//   node host_tests/run_wasm.mjs [runner options] host_tests/portable/test_x.py ...
//
// The package's own CLI always exits 0, so this driver loads the interpreter through its JS API,
// mirrors the test tree into the Emscripten in-memory FS with the checkout's layout
//   /w/<repo>/firmware/lib, /w/<repo>/host, /w/<repo>/host_tests (with host_tests/fixtures, the
// captured frames the tests read; nothing outside the repository is needed), runs
// host_tests/mpy_runner.py's amain() with top-level await and exits with its return code.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { mirror, mkdirs } from "../host/wasm_fs.mjs";

async function loadRuntime() {
  try {
    return await import("@micropython/micropython-webassembly-pyscript/micropython.mjs");
  } catch (err) {
    process.stderr.write(`run_wasm: cannot load the MicroPython wasm package (run \`npm ci\`): ${err.message}\n`);
    process.exit(2);
  }
}

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const VROOT = "/w";
const VREPO = `${VROOT}/${path.basename(REPO)}`;
const MIRROR = [
  [path.join(REPO, "firmware", "lib"), `${VREPO}/firmware/lib`],
  [path.join(REPO, "host"), `${VREPO}/host`],
  [path.join(REPO, "host_tests"), `${VREPO}/host_tests`], // incl. host_tests/fixtures
];
// Optional: the tests that need it skip with a reason when it is absent.
const VENDOR_MPLIB = process.env.JKGW_AIOBLE_PATH
  ? path.resolve(process.env.JKGW_AIOBLE_PATH.replace(/[\\/]aioble[\\/]?$/, ""))
  : path.join(REPO, "..", "shared", "vendor", "micropython-lib");
const OPTIONAL = [[VENDOR_MPLIB, `${VROOT}/shared/vendor/micropython-lib`]];

async function main(argv) {
  // Test files: resolve against the caller's cwd, then address them relative to the repository.
  const args = argv.map((a, i) => {
    if (a.startsWith("-") || ["-k", "-p"].includes(argv[i - 1]) || !a.endsWith(".py")) return a;
    const rel = path.relative(REPO, path.resolve(a)).split(path.sep).join("/");
    if (rel.startsWith("..") || !fs.existsSync(path.resolve(a))) {
      process.stderr.write(`run_wasm: test file not found inside the repository: ${a}\n`);
      process.exit(2);
    }
    return rel;
  });
  const { loadMicroPython } = await loadRuntime();
  const mp = await loadMicroPython({
    heapsize: 8 * 1024 * 1024, // initial heap; this build grows it on demand (no cap)
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  for (const [src, dst] of MIRROR) {
    if (fs.existsSync(src)) mirror(mp.FS, src, dst);
    else mkdirs(mp.FS, dst);
  }
  for (const [src, dst] of OPTIONAL) {
    if (fs.existsSync(src)) mirror(mp.FS, src, dst);
  }
  mp.FS.chdir(VREPO);
  mp.globals.set("_argv", args);
  await mp.runPythonAsync(
    [
      "import sys",
      "sys.path.insert(0, 'host_tests')",
      "import mpy_runner",
      "_rc = await mpy_runner.amain([str(a) for a in _argv])",
    ].join("\n"),
  );
  const rc = mp.globals.get("_rc");
  return Number.isInteger(rc) ? rc : 1;
}

main(process.argv.slice(2)).then(
  (rc) => process.exit(rc),
  (err) => {
    // A PythonError here means the runner itself broke (not a failing test).
    process.stderr.write(`run_wasm: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
