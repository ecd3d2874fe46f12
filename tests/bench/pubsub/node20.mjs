// libp2p 2.x and some of its dependencies (mortice, it-queue, abort-error, the peer store)
// call Promise.withResolvers, which Node.js has from 22 on; this gives Node 20 the same
// function (ES2024 semantics). Imported before libp2p by jsnode.mjs.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
