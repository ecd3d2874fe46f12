// The CRDT anchors, measured on the shared editing traces in the same run as vivimd's own
// engine (tests/bench/bench_crdt.c): Yjs, Automerge, Loro and diamond-types. For each trace
// and library: CPU time to apply every patch to a fresh document (median of runs), the
// encoded size of the final document, CPU time to load it back, and CPU time to merge two
// replicas that each replayed the whole trace independently. The final text is checked
// against endContent; a library whose positions are not code points may disagree on traces
// with characters outside the BMP, and the row then says so.
//
// usage: node bench.mjs [--runs N] TRACE.json.gz...
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { createRequire } from "node:module";
import * as Y from "yjs";
import * as Automerge from "@automerge/automerge";
import { LoroDoc } from "loro-crdt";

const require = createRequire(import.meta.url);
const DT = require("diamond-types-node");

function cpuMs(fn) {
  const t0 = process.cpuUsage();
  const r = fn();
  const t = process.cpuUsage(t0);
  return [(t.user + t.system) / 1000, r];
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const impls = {
  yjs: {
    replay(trace, client) {
      const doc = new Y.Doc();
      doc.clientID = client;
      const text = doc.getText("t");
      for (const txn of trace.txns)
        doc.transact(() => {
          for (const [pos, del, ins] of txn.patches) {
            if (del) text.delete(pos, del);
            if (ins) text.insert(pos, ins);
          }
        });
      return doc;
    },
    text: (doc) => doc.getText("t").toString(),
    save: (doc) => Y.encodeStateAsUpdate(doc),
    load(bytes) {
      const doc = new Y.Doc();
      Y.applyUpdate(doc, bytes);
      return doc;
    },
    merge(a, b) {
      Y.applyUpdate(a, Y.encodeStateAsUpdate(b));
      return a;
    },
  },
  automerge: {
    slow: true,
    replay(trace, client) {
      let doc = Automerge.from({ text: "" }, { actor: client.toString(16).padStart(8, "0") });
      for (const txn of trace.txns)
        doc = Automerge.change(doc, (d) => {
          for (const [pos, del, ins] of txn.patches) Automerge.splice(d, ["text"], pos, del, ins);
        });
      return doc;
    },
    text: (doc) => doc.text.toString(),
    save: (doc) => Automerge.save(doc),
    load: (bytes) => Automerge.load(bytes),
    merge: (a, b) => Automerge.merge(a, b),
  },
  loro: {
    replay(trace, client) {
      const doc = new LoroDoc();
      doc.setPeerId(BigInt(client));
      const text = doc.getText("t");
      for (const txn of trace.txns) {
        for (const [pos, del, ins] of txn.patches) {
          if (del) text.delete(pos, del);
          if (ins) text.insert(pos, ins);
        }
        doc.commit();
      }
      return doc;
    },
    text: (doc) => doc.getText("t").toString(),
    save: (doc) => doc.export({ mode: "snapshot" }),
    load(bytes) {
      const doc = new LoroDoc();
      doc.import(bytes);
      return doc;
    },
    merge(a, b) {
      a.import(b.export({ mode: "update" }));
      return a;
    },
  },
  "diamond-types": {
    replay(trace, client) {
      const doc = new DT.Doc("agent" + client);
      for (const txn of trace.txns)
        for (const [pos, del, ins] of txn.patches) {
          if (del) doc.del(pos, del);
          if (ins) doc.ins(pos, ins);
        }
      return doc;
    },
    text: (doc) => doc.get(),
    save: (doc) => doc.toBytes(),
    load: (bytes) => DT.Doc.fromBytes(bytes),
    merge(a, b) {
      a.merge(b.toBytes());
      return a;
    },
  },
};

const args = process.argv.slice(2);
let runs = 5;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--runs") runs = parseInt(args[++i], 10);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error("usage: node bench.mjs [--runs N] TRACE.json.gz...");
  process.exit(2);
}

console.log("| trace | implementation | replay ms (CPU, median) | encoded bytes | load ms | merge ms | final text |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | --- |");
for (const file of files) {
  const trace = JSON.parse(gunzipSync(readFileSync(file)).toString("utf8"));
  const name = file.split("/").pop().replace(".json.gz", "");
  for (const [lib, impl] of Object.entries(impls)) {
    try {
      const n = impl.slow ? 1 : runs;
      const times = [];
      let doc;
      for (let r = 0; r < n; r++) {
        const [ms, d] = cpuMs(() => impl.replay(trace, 1));
        times.push(ms);
        doc = d;
      }
      const ok = impl.text(doc) === trace.endContent;
      const bytes = impl.save(doc);
      const [loadMs, loaded] = cpuMs(() => impl.load(bytes));
      const loadOk = impl.text(loaded) === impl.text(doc);
      const other = impl.replay(trace, 2);
      const [mergeMs] = cpuMs(() => impl.merge(doc, other));
      console.log(
        `| ${name} | ${lib} | ${median(times).toFixed(0)}${n === 1 ? " (1 run)" : ""} | ${bytes.length} | ${loadMs.toFixed(1)} | ${mergeMs.toFixed(0)} | ${ok && loadOk ? "exact" : "DIFFERS"} |`,
      );
    } catch (e) {
      console.log(`| ${name} | ${lib} | error: ${String(e.message || e).slice(0, 60)} | | | | |`);
    }
  }
}
