// One js-libp2p gossipsub node for bench.mjs, run as a child process (fork) and driven over
// the IPC channel: start (listen on 127.0.0.1), dial a list of multiaddrs, subscribe, run a
// publishing schedule, report what was received. The receiving side is in this process, so
// a delivery's latency is from the publisher's clock reading before publish() to this
// process's 'message' event; both read CLOCK_MONOTONIC (process.hrtime), one clock on one
// machine.
import "./node20.mjs";
import { createLibp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { gossipsub } from "@chainsafe/libp2p-gossipsub";
import { multiaddr } from "@multiformats/multiaddr";
import { decodePayload, makePayload } from "./payload.mjs";

let node, gs;
let dups = 0;
let recv = null; // per run: { run, lat: [], seen: Map key -> count }

function send(msg) {
  process.send(msg);
}

async function start({ index, maxConnections }) {
  node = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        globalSignaturePolicy: "StrictSign",
      }),
    },
  });
  gs = node.services.pubsub;
  // Every copy of a message already in the seen cache is reported to the peer score as a
  // duplicate: count those calls.
  const dup = gs.score.duplicateMessage.bind(gs.score);
  gs.score.duplicateMessage = (...a) => {
    dups++;
    return dup(...a);
  };
  gs.addEventListener("message", (ev) => {
    const t = process.hrtime.bigint();
    const p = decodePayload(ev.detail.data);
    if (!p || !recv || p.run !== recv.run) return;
    const key = p.origin * 4294967296 + p.seq;
    const n = recv.seen.get(key) || 0;
    recv.seen.set(key, n + 1);
    if (n === 0) recv.lat.push(Number(t - p.t) / 1e6);
  });
  send({ type: "started", index, addrs: node.getMultiaddrs().map(String) });
}

async function run({ run, topic, origin, interval_ms, count, offset_ms }) {
  recv = { run, lat: [], seen: new Map() };
  const dups0 = dups;
  recv.dups0 = dups0;
  send({ type: "armed" });
  await new Promise((r) => process.once("message", r)); // "go"
  const t0 = performance.now() + offset_ms;
  let published = 0, failed = 0;
  for (let i = 0; i < count; i++) {
    const due = t0 + i * interval_ms;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    try {
      await gs.publish(topic, makePayload(run, origin, i, process.hrtime.bigint()));
      published++;
    } catch (e) {
      failed++;
    }
  }
  send({ type: "published", published, failed });
}

process.on("message", async (m) => {
  try {
    switch (m.cmd) {
      case "start":
        await start(m);
        break;
      case "dial":
        for (const a of m.addrs) {
          try {
            await node.dial(multiaddr(a));
          } catch (e) {
            send({ type: "log", text: `dial ${a}: ${e.message}` });
          }
        }
        send({ type: "dialled" });
        break;
      case "subscribe":
        gs.subscribe(m.topic);
        send({ type: "subscribed" });
        break;
      case "status":
        send({
          type: "status",
          connections: node.getConnections().length,
          mesh: gs.getMeshPeers(m.topic).length,
          topicPeers: gs.getSubscribers(m.topic).length,
        });
        break;
      case "run":
        run(m);
        break;
      case "go":
        break; // taken by run()
      case "report": {
        const counts = [...recv.seen.values()];
        send({
          type: "report",
          lat: recv.lat,
          unique: counts.length,
          appDuplicates: counts.reduce((s, c) => s + c - 1, 0),
          dups: dups - recv.dups0,
        });
        break;
      }
      case "stop":
        await node.stop();
        process.exit(0);
    }
  } catch (e) {
    send({ type: "error", text: String(e && e.stack || e) });
  }
});
send({ type: "ready" });
