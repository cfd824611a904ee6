// Run MicroPython code (read from stdin) under the webassembly port.
//   node tools/node/run.mjs [--heap BYTES] [DIR ...] < script.py
// Each DIR is copied (recursively, same absolute path) into the port's in-memory
// filesystem, so `sys.path` entries and model files given as DIRs are readable.
// Exit status: 0 when the script ran, 1 on an uncaught Python exception.
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const { loadMicroPython } = await import(
  path.join(here, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs")
);

let heapsize = 1 << 20;
const dirs = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--heap") heapsize = parseInt(argv[++i], 10);
  else dirs.push(path.resolve(argv[i]));
}

const mp = await loadMicroPython({
  heapsize,
  stdout: (s) => process.stdout.write(s + "\n"),
  stderr: (s) => process.stderr.write(s + "\n"),
});

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

function copy(src) {
  const st = fs.statSync(src);
  if (st.isDirectory()) {
    mkdirs(src);
    for (const name of fs.readdirSync(src)) {
      if (name === "__pycache__" || name.startsWith(".")) continue;
      copy(path.join(src, name));
    }
  } else if (st.isFile()) {
    mkdirs(path.dirname(src));
    mp.FS.writeFile(src, fs.readFileSync(src));
  }
}

for (const d of dirs) copy(d);

const code = fs.readFileSync(0, "utf8");
try {
  mp.runPython(code);
  process.exit(0);
} catch (e) {
  process.stderr.write(String(e && e.message ? e.message : e) + "\n");
  process.exit(1);
}
