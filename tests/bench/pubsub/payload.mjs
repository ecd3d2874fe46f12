// The 256-byte message body both sides publish: run number, origin node index, sequence
// number within the run and the publisher's CLOCK_MONOTONIC reading in ns (u32, u32, u32,
// u64, little-endian), then filler bytes that depend on all of them.
export const PAYLOAD_BYTES = 256;

export function makePayload(run, origin, seq, tNs) {
  const b = new Uint8Array(PAYLOAD_BYTES);
  const v = new DataView(b.buffer);
  v.setUint32(0, run, true);
  v.setUint32(4, origin, true);
  v.setUint32(8, seq, true);
  v.setBigUint64(12, tNs, true);
  let x = (run * 2654435761 + origin * 40503 + seq) >>> 0 || 1;
  for (let i = 20; i < PAYLOAD_BYTES; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

export function decodePayload(b) {
  if (!b || b.length !== PAYLOAD_BYTES) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { run: v.getUint32(0, true), origin: v.getUint32(4, true), seq: v.getUint32(8, true),
           t: v.getBigUint64(12, true) };
}
