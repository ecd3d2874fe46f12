// Loopback pubsub, side by side (issue 12, "Benchmarks"): N vivimd processes and N
// js-libp2p gossipsub processes on 127.0.0.1, the same dial pattern, one topic that every
// node subscribes to, every node publishing in turn 256-byte signed messages at a given total
// rate for a given time. Per (implementation, N, rate): delivery ratio, p50/p99 latency,
// duplicates per delivery, CPU seconds per 1,000 deliveries. One JSON line each, then a table.
//
// Dial pattern (both sides): node 0 first; node i > 0 dials node 0 and then min(3, i - 1)
// distinct nodes drawn at random (seeded) from 1 .. i-1, which are already up. vivimd gets
// them as its [net] bootstrap list (low_water 4, high_water 64); js-libp2p dials them in
// order (maxConnections 64, no discovery service).
//
// usage: node bench.mjs [--vivimd PATH] [--impl vivimd,js] [--nodes 10,20,32]
//          [--rates 2,10,25,50,100,200] [--duration S] [--drain S] [--seed N] [--json FILE]
import { fork, spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, rmSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import dgram from "node:dgram";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { decodePayload, makePayload, PAYLOAD_BYTES } from "./payload.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const VIVIMD = args.vivimd || "build/release/vivimd";
const IMPLS = (args.impl || "vivimd,js").split(",");
const NODES = (args.nodes || "10,20,32").split(",").map(Number);
const RATES = (args.rates || "2,10,25,50,100,200").split(",").map(Number);
const DURATION_S = Number(args.duration || 8);
const DRAIN_S = Number(args.drain || 3);
const SEED = Number(args.seed || 1);
const JSON_OUT = args.json || null;
const CLK_TCK = Number(process.env.CLK_TCK || 100);
const TOPIC = "bench";
const EXTRA_DIALS = 3;
const COLLAPSE = 0.5; // below this delivery ratio, the higher rates of that N are skipped

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => process.stderr.write(s + "\n");

function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 4294967296;
  };
}

function dialPlan(n, seed) {
  const r = rng(seed * 7919 + n);
  const plan = [[]];
  for (let i = 1; i < n; i++) {
    const others = [];
    const pool = [];
    for (let j = 1; j < i; j++) pool.push(j);
    while (others.length < Math.min(EXTRA_DIALS, i - 1)) {
      const k = Math.floor(r() * pool.length);
      others.push(pool.splice(k, 1)[0]);
    }
    plan.push([0, ...others]);
  }
  return plan;
}

function cpuTicks(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
  } catch {
    return 0;
  }
}
// The machine's idle CPU (all cores, seconds) from /proc/stat: idle + iowait.
function machineIdleS() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  return (Number(f[4]) + Number(f[5])) / CLK_TCK;
}
const cpuSeconds = (pids) => pids.reduce((s, p) => s + cpuTicks(p), 0) / CLK_TCK;

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

// Schedule: message k of the run (0 .. total-1) is published by node k mod N at
// k / rate seconds after the start.
function schedule(n, rate, durationS) {
  const total = Math.round(rate * durationS);
  const interval = (1000 * n) / rate;
  return Array.from({ length: n }, (_, i) => ({
    origin: i,
    count: i < total ? Math.ceil((total - i) / n) : 0,
    interval_ms: interval,
    offset_ms: (1000 * i) / rate,
  }));
}

// ---- js-libp2p gossipsub ------------------------------------------------------------------
class JsNode {
  constructor(index) {
    this.index = index;
    this.proc = fork(path.join(here, "jsnode.mjs"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.pid = this.proc.pid;
    this.waiters = [];
    this.proc.on("message", (m) => {
      if (m.type === "log") return log(`js node ${index}: ${m.text}`);
      if (m.type === "error") return log(`js node ${index}: error ${m.text}`);
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    });
  }
  wait(type, ms = 60000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`js node ${this.index}: no ${type}`)), ms);
      this.waiters.push({ type, resolve: (m) => { clearTimeout(t); resolve(m); } });
    });
  }
  async cmd(msg, reply) {
    const w = reply ? this.wait(reply) : null;
    this.proc.send(msg);
    return w;
  }
}

async function jsSetup(n, plan) {
  // The processes start together (loading libp2p takes a while on a busy machine); the
  // dials are then made in order, node i's after node i-1's.
  const nodes = Array.from({ length: n }, (_, i) => new JsNode(i));
  await Promise.all(nodes.map(async (node, i) => {
    await node.wait("ready");
    const m = await node.cmd({ cmd: "start", index: i, maxConnections: 64 }, "started");
    node.addr = m.addrs[0];
  }));
  for (let i = 0; i < n; i++)
    await nodes[i].cmd({ cmd: "dial", addrs: plan[i].map((j) => nodes[j].addr) }, "dialled");
  await Promise.all(nodes.map((x) => x.cmd({ cmd: "subscribe", topic: TOPIC }, "subscribed")));
  return {
    nodes,
    pids: nodes.map((x) => x.pid),
    status: async () => {
      const s = await Promise.all(nodes.map((x) => x.cmd({ cmd: "status", topic: TOPIC }, "status")));
      return s.map((x) => ({ connections: x.connections, mesh: x.mesh }));
    },
    async run(runId, sched, drainS) {
      await Promise.all(nodes.map((x, i) =>
        x.cmd({ cmd: "run", run: runId, topic: TOPIC, ...sched[i] }, "armed")));
      const pubs = nodes.map((x) => x.wait("published", 600000));
      for (const x of nodes) x.proc.send({ cmd: "go" });
      const p = await Promise.all(pubs);
      await sleep(drainS * 1000);
      const reps = await Promise.all(nodes.map((x) => x.cmd({ cmd: "report" }, "report")));
      return {
        published: p.reduce((s, x) => s + x.published, 0),
        publishFailed: p.reduce((s, x) => s + x.failed, 0),
        lat: reps.flatMap((r) => r.lat),
        deliveries: reps.reduce((s, r) => s + r.unique, 0),
        appDuplicates: reps.reduce((s, r) => s + r.appDuplicates, 0),
        duplicates: reps.reduce((s, r) => s + r.dups, 0),
      };
    },
    async close() {
      for (const x of nodes) {
        x.proc.send({ cmd: "stop" });
        const done = new Promise((r) => x.proc.once("exit", r));
        if (await Promise.race([done, sleep(5000).then(() => "t")]) === "t") x.proc.kill("SIGKILL");
      }
    },
  };
}

// ---- vivimd --------------------------------------------------------------------------------
const portsGiven = new Set();
async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
    const udpFree = await new Promise((resolve) => {
      const u = dgram.createSocket("udp4");
      u.once("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (udpFree && !portsGiven.has(port)) {
      portsGiven.add(port);
      return port;
    }
  }
}

class Rpc {
  constructor(sock) {
    this.sock = sock;
    this.buf = "";
    this.next = 1;
    this.pending = new Map();
    this.onNotify = null;
    sock.setEncoding("utf8");
    sock.on("data", (d) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (!line) continue;
        const m = JSON.parse(line);
        if (m.id !== undefined && this.pending.has(m.id)) {
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          m.error ? p.reject(new Error(JSON.stringify(m.error))) : p.resolve(m.result);
        } else if (m.method && this.onNotify) this.onNotify(m);
      }
    });
    sock.on("error", (e) => { for (const p of this.pending.values()) p.reject(e); this.pending.clear(); });
    sock.on("close", () => {
      for (const p of this.pending.values()) p.reject(new Error("closed"));
      this.pending.clear();
      this.closed = true;
    });
  }
  static connect(file) {
    return new Promise((resolve, reject) => {
      const s = net.connect(file);
      s.once("connect", () => resolve(new Rpc(s)));
      s.once("error", reject);
    });
  }
  call(method, params) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
    });
  }
  close() { this.sock.destroy(); }
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (r) => {
      let b = "";
      r.setEncoding("utf8");
      r.on("data", (d) => (b += d));
      r.on("end", () => resolve(b));
    }).on("error", reject);
  });
}

async function metrics(node) {
  const text = await httpGet(`http://127.0.0.1:${node.metricsPort}/metrics`);
  const get = (name) => {
    const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, "m"));
    return m ? Number(m[1]) : 0;
  };
  return {
    delivered: get("vivimd_pubsub_delivered_total"),
    duplicates: get("vivimd_pubsub_duplicates_total"),
    published: get("vivimd_pubsub_published_total"),
    connections: get("vivimd_net_connections"),
    dropped: [...text.matchAll(/^vivimd_pubsub_dropped_total\{reason="([a-z_]+)"\} ([0-9.e+-]+)$/gm)]
      .reduce((o, m) => ((o[m[1]] = Number(m[2])), o), {}),
  };
}

async function vivimdSetup(n, plan) {
  const tmp = mkdtempSync(path.join(tmpdir(), "vv-psbench-"));
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const dir = path.join(tmp, `n${i}`);
    const node = {
      index: i,
      dir,
      socket: path.join(dir, "rpc.sock"),
      metricsPort: await freePort(),
      netPort: await freePort(),
    };
    const conf = [
      "[node]", `state_dir = ${dir}/state`, "",
      "[log]", "level = warn", "",
      "[rpc]", `socket = ${node.socket}`, "",
      "[metrics]", `listen = 127.0.0.1:${node.metricsPort}`, "",
      "[net]", `listen = 127.0.0.1:${node.netPort}`,
      `bootstrap = ${plan[i].map((j) => `127.0.0.1:${nodes[j].netPort}`).join(",")}`,
      "low_water = 4", "high_water = 64", "",
    ].join("\n");
    (await import("node:fs")).mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "vivimd.conf"), conf);
    const logFd = (await import("node:fs")).openSync(path.join(dir, "vivimd.log"), "a");
    node.proc = spawn(VIVIMD, ["--config", path.join(dir, "vivimd.conf")], {
      stdio: ["ignore", logFd, logFd],
    });
    node.pid = node.proc.pid;
    node.exited = null;
    node.proc.on("exit", (code, sig) => { node.exited = { code, sig }; });
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        node.ctl = await Rpc.connect(node.socket);
        break;
      } catch {
        if (node.exited) throw new Error(`vivimd ${i} exited ${JSON.stringify(node.exited)}; log in ${dir}`);
        if (Date.now() > deadline) throw new Error(`vivimd ${i}: no RPC socket after 30 s`);
        await sleep(50);
      }
    }
    nodes.push(node);
  }
  const recv = { run: -1, lat: [], seen: new Map() };
  for (const node of nodes) {
    node.sub = await Rpc.connect(node.socket);
    node.sub.onNotify = (m) => {
      if (m.method !== "pubsub.message") return;
      const t = process.hrtime.bigint();
      const p = decodePayload(Buffer.from(m.params.data, "base64"));
      if (!p || p.run !== recv.run || p.origin === node.index) return;
      const key = (p.origin * 4294967296 + p.seq) * 64 + node.index;
      const c = recv.seen.get(key) || 0;
      recv.seen.set(key, c + 1);
      if (c === 0) recv.lat.push(Number(t - p.t) / 1e6);
    };
    node.sub.sock.on("close", () => { if (!node.closing) log(`vivimd ${node.index}: subscription connection closed`); });
    await node.sub.call("pubsub.subscribe", { topic: TOPIC });
    node.pub = await Rpc.connect(node.socket);
  }
  return {
    nodes,
    tmp,
    pids: nodes.map((x) => x.pid),
    status: async () => {
      const out = [];
      for (const node of nodes) {
        const t = await node.ctl.call("pubsub.listTopics", {});
        const m = await metrics(node);
        const topic = (t.topics || []).find((x) => x.topic === TOPIC) || {};
        out.push({ connections: m.connections, mesh: topic.meshPeers || 0 });
      }
      return out;
    },
    async run(runId, sched, drainS) {
      const before = await Promise.all(nodes.map(metrics));
      recv.run = runId;
      recv.lat = [];
      recv.seen = new Map();
      let published = 0, failed = 0;
      const t0 = performance.now();
      const all = [];
      for (const s of sched)
        for (let k = 0; k < s.count; k++) all.push({ at: s.offset_ms + k * s.interval_ms, origin: s.origin, seq: k });
      all.sort((a, b) => a.at - b.at);
      const replies = [];
      for (const msg of all) {
        const wait = t0 + msg.at - performance.now();
        if (wait > 0) await sleep(wait);
        const data = Buffer.from(makePayload(runId, msg.origin, msg.seq, process.hrtime.bigint())).toString("base64");
        replies.push(nodes[msg.origin].pub.call("pubsub.publish", { topic: TOPIC, data })
          .then(() => published++, (e) => { failed++; if (failed < 4) log(`publish: ${e.message}`); }));
      }
      await Promise.all(replies);
      await sleep(drainS * 1000);
      const after = await Promise.all(nodes.map(metrics));
      const sum = (f) => after.reduce((s, a, i) => s + f(a) - f(before[i]), 0);
      const dropped = {};
      after.forEach((a, i) => {
        for (const [k, v] of Object.entries(a.dropped)) {
          const d = v - (before[i].dropped[k] || 0);
          if (d) dropped[k] = (dropped[k] || 0) + d;
        }
      });
      const counts = [...recv.seen.values()];
      const res = {
        published,
        publishFailed: failed,
        lat: recv.lat,
        deliveries: counts.length,
        appDuplicates: counts.reduce((s, c) => s + c - 1, 0),
        duplicates: sum((a) => a.duplicates),
        metricDelivered: sum((a) => a.delivered),
        metricPublished: sum((a) => a.published),
        dropped,
      };
      recv.run = -1;
      return res;
    },
    async close() {
      for (const node of nodes) {
        node.closing = true;
        for (const c of [node.sub, node.pub, node.ctl]) c && c.close();
        if (!node.exited) {
          node.proc.kill("SIGTERM");
          const done = new Promise((r) => node.proc.once("exit", r));
          if (await Promise.race([done, sleep(10000).then(() => "t")]) === "t") {
            log(`vivimd ${node.index}: no exit 10 s after SIGTERM; SIGKILL`);
            node.proc.kill("SIGKILL");
          }
        }
      }
      if (!process.env.PUBSUB_BENCH_KEEP) rmSync(tmp, { recursive: true, force: true });
      else log(`vivimd state kept in ${tmp}`);
    },
  };
}

// ---- driver --------------------------------------------------------------------------------
async function waitMesh(net, n) {
  const want = Math.min(4, n - 1);
  const t0 = Date.now();
  let s;
  for (;;) {
    s = await net.status();
    if (s.every((x) => x.mesh >= want) || Date.now() - t0 > 20000) break;
    await sleep(500);
  }
  return { waitedS: (Date.now() - t0) / 1000, status: s };
}

const results = [];
let runId = 1;
for (const n of NODES) {
  const plan = dialPlan(n, SEED);
  for (const impl of IMPLS) {
    const t0 = Date.now();
    let netw;
    try {
      netw = impl === "js" ? await jsSetup(n, plan) : await vivimdSetup(n, plan);
    } catch (e) {
      log(`${impl} N=${n}: setup failed: ${e.message}`);
      continue;
    }
    const mesh = await waitMesh(netw, n);
    const conns = mesh.status.map((x) => x.connections);
    const meshes = mesh.status.map((x) => x.mesh);
    const setup = {
      setupS: (Date.now() - t0) / 1000,
      meshWaitS: mesh.waitedS,
      connections: { min: Math.min(...conns), mean: conns.reduce((a, b) => a + b, 0) / n, max: Math.max(...conns) },
      mesh: { min: Math.min(...meshes), mean: meshes.reduce((a, b) => a + b, 0) / n, max: Math.max(...meshes) },
    };
    log(`${impl} N=${n}: up in ${setup.setupS.toFixed(1)} s; ${JSON.stringify(setup)}`);
    let collapsed = null;
    const implName = impl === "js" ? "js-libp2p-gossipsub" : "vivimd";
    for (const rate of RATES) {
      if (collapsed !== null) {
        const row = { implementation: implName, nodes: n, rate, skipped: `delivery below ${COLLAPSE} at ${collapsed} msg/s` };
        results.push(row);
        console.log(JSON.stringify(row));
        if (JSON_OUT) appendFileSync(JSON_OUT, JSON.stringify(row) + "\n");
        continue;
      }
      const sched = schedule(n, rate, DURATION_S);
      const pids = netw.pids;
      const c0 = cpuSeconds(pids);
      const client0 = process.cpuUsage();
      const idle0 = machineIdleS();
      const w0 = performance.now();
      const r = await netw.run(runId++, sched, DRAIN_S);
      const cpu = cpuSeconds(pids) - c0;
      const client = process.cpuUsage(client0);
      const idle = machineIdleS() - idle0;
      const wall = (performance.now() - w0) / 1000;
      const lat = r.lat.sort((a, b) => a - b);
      const expected = r.published * (n - 1);
      const row = {
        implementation: implName,
        nodes: n,
        rate,
        durationS: DURATION_S,
        payloadBytes: PAYLOAD_BYTES,
        published: r.published,
        publishFailed: r.publishFailed,
        expected,
        deliveries: r.deliveries,
        deliveryRatio: expected ? r.deliveries / expected : null,
        p50Ms: pct(lat, 50),
        p99Ms: pct(lat, 99),
        maxMs: lat.length ? lat[lat.length - 1] : null,
        duplicatesPerDelivery: r.deliveries ? r.duplicates / r.deliveries : null,
        appDuplicates: r.appDuplicates,
        cpuS: cpu,
        wallS: wall,
        cpuSPer1000: r.deliveries ? (cpu * 1000) / r.deliveries : null,
        // this driver's own CPU in the run: for vivimd it is the RPC clients (publishing,
        // reading and parsing every notification); for js it only waits
        driverCpuS: (client.user + client.system) / 1e6,
        machineIdleS: idle, // idle core-seconds of the whole machine in the run
        loadavg1: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
        setup,
      };
      // The connections and mesh sizes right after the run (a collapse shows here).
      const st = await netw.status();
      const sc = st.map((x) => x.connections), sm = st.map((x) => x.mesh);
      row.after = {
        connections: { min: Math.min(...sc), mean: sc.reduce((a, b) => a + b, 0) / n },
        mesh: { min: Math.min(...sm), mean: sm.reduce((a, b) => a + b, 0) / n },
      };
      if (r.metricDelivered !== undefined) {
        row.metricDelivered = r.metricDelivered;
        row.metricPublished = r.metricPublished;
        row.dropped = r.dropped;
      }
      results.push(row);
      console.log(JSON.stringify(row));
      if (JSON_OUT) appendFileSync(JSON_OUT, JSON.stringify(row) + "\n");
      if (row.deliveryRatio !== null && row.deliveryRatio < COLLAPSE) collapsed = rate;
      if (impl === "vivimd" && netw.nodes.some((x) => x.exited)) {
        log(`vivimd N=${n}: a node exited: ${JSON.stringify(netw.nodes.filter((x) => x.exited).map((x) => [x.index, x.exited]))}`);
        collapsed = rate;
      }
    }
    await netw.close();
  }
}

const f = (x, d = 1) => (x === null || x === undefined ? "-" : x.toFixed(d));
console.log("\n| implementation | N | msg/s | published | delivered | ratio | p50 ms | p99 ms | dup/delivery | CPU s / 1,000 deliveries |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of results) {
  if (r.skipped) {
    console.log(`| ${r.implementation} | ${r.nodes} | ${r.rate} | skipped: ${r.skipped} | | | | | | |`);
    continue;
  }
  console.log(`| ${r.implementation} | ${r.nodes} | ${r.rate} | ${r.published} | ${r.deliveries} / ${r.expected} | ` +
    `${f(r.deliveryRatio, 4)} | ${f(r.p50Ms)} | ${f(r.p99Ms)} | ${f(r.duplicatesPerDelivery, 2)} | ${f(r.cpuSPer1000, 3)} |`);
}
