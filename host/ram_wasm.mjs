// Runs host/ram_probe.py on the MicroPython webassembly port (32-bit objects, like the ESP32)
// against a `make device` .mpy tree; host/ram.py (`make ram`) calls it.
//
//   node host/ram_wasm.mjs --lib build/device/lib [--aioble build/aioble/lib] [--mqtt-as build/mqtt_as/lib]
//        [--romfs IMG] --replies DIR [--verbose] CONFIG...
//
// DIR holds the recorded BMS replies, one file per request set (ram_probe.replies_key()).
// Each measurement runs in a fresh interpreter: the .mpy tree is copied to /lib (sys.path as on
// the ESP32), the probe and host_tests/portable/mcp2515_model.py to /probe. Prints per config
//   ram CONFIG: N bytes (wasm32, .mpy)
// and with --verbose, after it, one line per module in load order (then "(app_objects_and_data)"):
// its cost (see QSTR_ENTRY below), the bytes as measured, and the qstrs it added, their text
// bytes and the growth of the qstr pools:
//   mod CONFIG MODULE COST BYTES QSTRS TEXT POOL
// Exit status 0, or 1 when a measurement failed (its Python traceback on stderr).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import { mirror, mkdirs } from "./wasm_fs.mjs";

// The probe calls js.gc() (a JS garbage collection) before each measurement.
v8.setFlagsFromString("--expose-gc");
globalThis.gc = vm.runInNewContext("gc");

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PROBE_FILES = [
  [path.join(REPO, "host", "ram_probe.py"), "/probe/ram_probe.py"],
  [path.join(REPO, "host_tests", "portable", "mcp2515_model.py"), "/probe/mcp2515_model.py"],
  // the simulated radio for the BLE configuration (host/fakeble): stands in for the firmware's
  // built-in bluetooth module, loaded before the baseline
  [path.join(REPO, "host", "fakeble", "env.py"), "/probe/fakeble/env.py"],
  [path.join(REPO, "host", "fakeble", "bluetooth.py"), "/probe/fakeble/bluetooth.py"],
  [path.join(REPO, "host", "fakeble", "jk_peripheral.py"), "/probe/fakeble/jk_peripheral.py"],
  // the network configurations: Wi-Fi (host/fakenet), sockets, an MQTT broker and the web
  // page's listener (host/ram_net.py), all loaded before the baseline
  [path.join(REPO, "host", "ram_net.py"), "/probe/ram_net.py"],
  [path.join(REPO, "host", "fakenet", "network.py"), "/probe/fakenet/network.py"],
  [path.join(REPO, "host", "fakenet", "machine.py"), "/probe/fakenet/machine.py"],
];

let loadMicroPython;

// A fresh interpreter with the .mpy tree on /lib and the probe on /probe. Its run(code) runs
// Python code and returns the string the code leaves in _r; when it returns, a collection
// gc.collect() asked for has run (the webassembly port collects only with control back in JS).
async function interpreter(opts, qstrLines = []) {
  const errors = [];
  const mp = await loadMicroPython({
    heapsize: 4 * 1024 * 1024, // initial heap; this build grows it on demand
    stdout: (line) => (line.startsWith("qstr pool:") ? qstrLines.push(line) : process.stderr.write(line + "\n")),
    stderr: (line) => errors.push(line),
  });
  if (!opts.romfs) {
    mirror(mp.FS, opts.lib, "/lib");
    if (opts.aioble && fs.existsSync(opts.aioble)) mirror(mp.FS, opts.aioble, "/lib"); // as mip installs it
    if (opts.mqttAs && fs.existsSync(opts.mqttAs)) mirror(mp.FS, opts.mqttAs, "/lib"); // lib/mqtt_as/, as mip does
  }
  mkdirs(mp.FS, "/probe/replies");
  mkdirs(mp.FS, "/probe/fakeble");
  mkdirs(mp.FS, "/probe/fakenet");
  for (const [src, dst] of PROBE_FILES) mp.FS.writeFile(dst, fs.readFileSync(src));
  mirror(mp.FS, opts.replies, "/probe/replies");
  const run = async (code) => {
    try {
      await mp.runPythonAsync(code);
    } catch (err) {
      throw new Error(`${err.message || err}\n${errors.join("\n")}`);
    }
    return mp.globals.get("_r");
  };
  // --romfs: the same .mpy files in a ROMFS image (mpremote romfs build) mounted at /rom, so
  // bytecode and constants stay in the image (in flash on the device) instead of being copied to
  // the heap; the image itself is read before the baseline
  const rom = opts.romfs
    ? "import vfs\n_img = open('/probe/rom.img', 'rb').read()\nvfs.mount(vfs.VfsRom(_img), '/rom')\n" +
      "sys.path.remove('/lib') if '/lib' in sys.path else None\nsys.path.append('/rom/lib')\n"
    : "";
  if (opts.romfs) mp.FS.writeFile("/probe/rom.img", fs.readFileSync(opts.romfs));
  await run("import gc, sys\n" + rom + "sys.path.append('/probe')\nimport ram_probe as P\n_r = None\ngc.collect()");
  return run;
}

// qstr_info() line -> [qstrs, string bytes, pool bytes (entry arrays + strings)]
function qstrFigures(line) {
  return ["n_qstr", "n_str_data_bytes", "n_total_bytes"].map((key) => Number(new RegExp(`${key}=(\\d+)`).exec(line)[1]));
}

// Names and strings are interned in qstr pools whose entry arrays double in size when full
// (a pool of 1280 entries takes 8992 bytes on wasm32: 7 per entry), so a measurement that
// crosses a doubling would charge several KB of empty entries to whatever happens to be loaded
// then, depending on what was loaded before. Every figure therefore counts the qstrs it added at
// their own size (QSTR_ENTRY + text) in place of the pools' growth: the same result whatever
// was loaded before the baseline. The pools' slack is reported separately (verbose).
const QSTR_ENTRY = 7;

function cost(bytes, q0, q1) {
  const [n, text, pool] = q1.map((v, k) => v - q0[k]);
  return { cost: bytes - (pool - text) + QSTR_ENTRY * n, bytes, n, text, pool };
}

// `import asyncio` (the firmware needs it; on the ESP32 it is frozen): the collections run
// between the steps.
async function asyncioCost(run, qstrLines) {
  qstrLines.length = 0;
  await run("_a = gc.mem_alloc()\nP._qstr_info()\nimport asyncio\ngc.collect()");
  const bytes = Number(await run("_r = str(gc.mem_alloc() - _a)\nP._qstr_info()"));
  return cost(bytes, qstrFigures(qstrLines[0]), qstrFigures(qstrLines[1]));
}

async function measure(opts, name) {
  const args = `${JSON.stringify(name)}, '/probe/replies/' + P.replies_key(${JSON.stringify(name)}) + '.txt'`;
  const qstrLines = [];
  let run = await interpreter(opts, qstrLines);
  const runtime = await asyncioCost(run, qstrLines);
  qstrLines.length = 0;
  const bytes = Number(await run(`_r = str(await P.measure(${args}))`));
  const app = cost(bytes, qstrFigures(qstrLines[0]), qstrFigures(qstrLines[1]));
  process.stdout.write(`ram ${name}: ${runtime.cost + app.cost} bytes (wasm32, ${opts.romfs ? "romfs" : ".mpy"})\n`);
  if (!opts.verbose) return;

  run = await interpreter(opts);
  const order = await run(`_r = ' '.join(await P.import_order(${args}))`);
  run = await interpreter(opts, qstrLines);
  const rows = [["asyncio", await asyncioCost(run, qstrLines)]];
  qstrLines.length = 0;
  const out = await run(
    [
      `_rows = await P.breakdown(${args}, ${JSON.stringify(order)}.split())`,
      "_r = '\\n'.join(['%s\\t%d' % (m, b) for m, b in _rows])",
    ].join("\n"),
  );
  const list = out.split("\n").map((row) => row.split("\t"));
  const q = qstrLines.map(qstrFigures);
  if (q.length !== list.length) throw new Error(`${q.length} qstr lines for ${list.length} rows`);
  for (let i = 0; i < list.length - 1; i++) rows.push([list[i][0], cost(Number(list[i][1]), q[i], q[i + 1])]);
  // per module: COST BYTES (as measured) QSTRS TEXT POOL
  for (const [mod, c] of rows) {
    process.stdout.write(`mod ${name} ${mod.replace(/ /g, "_")} ${c.cost} ${c.bytes} ${c.n} ${c.text} ${c.pool}\n`);
  }
}

async function main(argv) {
  const opts = { lib: path.join(REPO, "build", "device", "lib"), aioble: null, mqttAs: null, romfs: null,
    replies: null, verbose: false };
  const names = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--lib") opts.lib = path.resolve(argv[++i]);
    else if (argv[i] === "--replies") opts.replies = path.resolve(argv[++i]);
    else if (argv[i] === "--aioble") opts.aioble = path.resolve(argv[++i]);
    else if (argv[i] === "--mqtt-as") opts.mqttAs = path.resolve(argv[++i]);
    else if (argv[i] === "--romfs") opts.romfs = path.resolve(argv[++i]);
    else if (argv[i] === "--verbose") opts.verbose = true;
    else names.push(argv[i]);
  }
  if (!opts.replies || !names.length) {
    process.stderr.write("usage: node host/ram_wasm.mjs --lib LIB [--aioble DIR] [--mqtt-as DIR] [--romfs IMG] " +
      "--replies DIR [--verbose] CONFIG...\n");
    return 2;
  }
  if (!fs.existsSync(path.join(opts.lib, "app"))) {
    process.stderr.write(`ram_wasm: no .mpy tree at ${opts.lib} (run make device)\n`);
    return 2;
  }
  try {
    ({ loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript/micropython.mjs"));
  } catch (err) {
    process.stderr.write(`ram_wasm: cannot load the MicroPython wasm package (run \`npm ci\`): ${err.message}\n`);
    return 2;
  }
  let rc = 0;
  for (const name of names) {
    try {
      await measure(opts, name);
    } catch (err) {
      process.stderr.write(`ram_wasm: ${name}: ${err.message}\n`);
      rc = 1;
    }
  }
  return rc;
}

main(process.argv.slice(2)).then((rc) => process.exit(rc));
