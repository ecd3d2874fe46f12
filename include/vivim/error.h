/*
 * One table of every error code vivimd's own code returns.
 *
 * Functions return 0 or a negative code. Codes from libuv and errno (-1 .. -4095) pass through
 * unchanged; the project's own codes start at -10000 and each module owns a range of 100, so
 * a number seen in a log line or in a JSON-RPC error tells at once which module raised it.
 * The same numbers are used as JSON-RPC error codes for application errors (they lie outside
 * the -32768 .. -32000 range the JSON-RPC 2.0 specification reserves).
 *
 * To add a code, add one X(...) line inside your module's block, keeping the numbers of the
 * block in order. Never renumber a code: operators and scripts match on them.
 */
#ifndef VIVIM_ERROR_H
#define VIVIM_ERROR_H

/* X(name, value, message) */
#define VV_ERRORS(X)                                                                               \
    /* common: -10000 .. -10099 */                                                                 \
    X(VV_EINVAL, -10001, "invalid argument")                                                       \
    X(VV_ENOMEM, -10002, "out of memory")                                                          \
    X(VV_ELIMIT, -10003, "limit exceeded")                                                         \
    X(VV_ENOTFOUND, -10004, "not found")                                                           \
    X(VV_EEXIST, -10005, "already exists")                                                         \
    X(VV_ESTATE, -10006, "operation not valid in the current state")                               \
    X(VV_EIO, -10007, "input/output error")                                                        \
    X(VV_ETIMEDOUT, -10008, "timed out")                                                           \
    X(VV_ECLOSED, -10009, "closed")                                                                \
    X(VV_EBUSY, -10010, "busy, try again later")                                                   \
    /* config: -10100 .. -10199 */                                                                 \
    X(VV_ECONFIG_SYNTAX, -10101, "configuration syntax error")                                     \
    X(VV_ECONFIG_UNKNOWN, -10102, "unknown configuration section or key")                          \
    X(VV_ECONFIG_VALUE, -10103, "malformed configuration value")                                   \
    X(VV_ECONFIG_RANGE, -10104, "configuration value out of range")                                \
    X(VV_ECONFIG_OPEN, -10105, "cannot read configuration file")                                   \
    /* identity: -10200 .. -10299 */                                                               \
    X(VV_EKEY_PERM, -10201, "key file permissions are too open")                                   \
    X(VV_EKEY_SIZE, -10202, "key file has the wrong size")                                         \
    X(VV_EKEY_CORRUPT, -10203, "key file is corrupt")                                              \
    /* node: -10300 .. -10399 */                                                                   \
    X(VV_ENODE_RUNNING, -10301, "another vivimd is already running on this socket")                \
    X(VV_ENODE_SHUTTING_DOWN, -10302, "node is shutting down")                                     \
    X(VV_ENODE_STATE_LOCKED, -10303, "state directory is in use by another vivimd")                \
    X(VV_ENODE_STATE_PERM, -10304, "state directory is writable by others")                        \
    X(VV_ENODE_MODULE_DEPS, -10305, "a module's dependencies are missing or circular")             \
    /* rpc: -10400 .. -10499 */                                                                    \
    X(VV_ERPC_LINE_TOO_LONG, -10401, "request line too long")                                      \
    X(VV_ERPC_TOO_MANY_CLIENTS, -10402, "too many RPC clients")                                    \
    X(VV_ERPC_QUEUE_FULL, -10403, "client output queue full")                                      \
    /* monitor: -10500 .. -10599 */                                                                \
    X(VV_EMETRICS_CARDINALITY, -10501, "metric label cardinality limit reached")                   \
    X(VV_EHTTP_BAD_REQUEST, -10502, "malformed HTTP request")                                      \
    /* wire: -10600 .. -10699 */                                                                   \
    X(VV_EWIRE_TRUNCATED, -10601, "frame ends inside a field")                                     \
    X(VV_EWIRE_TOO_LARGE, -10602, "frame exceeds the maximum size")                                \
    X(VV_EWIRE_MALFORMED, -10603, "malformed frame")                                               \
    X(VV_EWIRE_VERSION, -10604, "unsupported protocol version")                                    \
    X(VV_EWIRE_UNKNOWN_TYPE, -10605, "unknown message type")                                       \
    /* secure channel: -10700 .. -10799 */                                                         \
    X(VV_ENOISE_DECRYPT, -10701, "authentication of encrypted data failed")                        \
    X(VV_ENOISE_HANDSHAKE, -10702, "handshake failed")                                             \
    X(VV_ENOISE_IDENTITY, -10703, "peer identity does not match")                                  \
    X(VV_ENOISE_SIGNATURE, -10704, "identity signature is invalid")                                \
    /* connection manager and discovery: -10800 .. -10899 */                                       \
    X(VV_ECONN_LIMIT, -10801, "connection limit reached")                                          \
    X(VV_ECONN_BACKPRESSURE, -10802, "peer outbound queue full")                                   \
    X(VV_ECONN_NOT_CONNECTED, -10803, "peer not connected")                                        \
    X(VV_EDGRAM_MALFORMED, -10804, "malformed datagram envelope")                                  \
    X(VV_EDGRAM_UNSUPPORTED, -10805, "datagrams not supported by this environment")                \
    X(VV_EDGRAM_ADDRESS, -10806, "not a numeric ip:port datagram address")                         \
    /* dht: -10900 .. -10999 */                                                                    \
    X(VV_EDHT_MALFORMED, -10901, "malformed DHT message")                                          \
    X(VV_EDHT_ADDRESS, -10902, "not a numeric IP address with a port")                             \
    X(VV_EDHT_SNAPSHOT, -10903, "routing table snapshot is corrupt or of another version")         \
    X(VV_EDHT_TOO_LARGE, -10904, "DHT value or record too large")                                  \
    X(VV_EDHT_STALE_SEQ, -10905, "sequence number not above the stored one")                       \
    X(VV_EDHT_EXPIRY, -10906, "record expired or its expiry too far ahead")                        \
    X(VV_EDHT_QUOTA, -10907, "source over its DHT storage quota")                                  \
    X(VV_EDHT_FULL, -10908, "DHT store full")                                                      \
    X(VV_EDHT_TOKEN, -10909, "DHT token invalid or expired")                                       \
    X(VV_EDHT_SIGNATURE, -10910, "DHT record signature invalid")                                   \
    X(VV_EDHT_KEY_MISMATCH, -10911, "DHT record does not belong to its key")                       \
    X(VV_EDHT_NO_ROOM, -10912, "DHT reply does not fit its size budget")                           \
    /* pubsub: -11000 .. -11099 */                                                                 \
    X(VV_EPUBSUB_MALFORMED, -11001, "malformed pubsub message")                                    \
    X(VV_EPUBSUB_ORIGIN, -11002, "pubsub sender is not the hash of the origin key")                \
    X(VV_EPUBSUB_SIGNATURE, -11003, "pubsub message signature is invalid")                         \
    X(VV_EPUBSUB_PARAMS, -11004, "pubsub score parameters are not sane")                           \
    X(VV_EPUBSUB_BACKOFF, -11005, "GRAFT during a PRUNE backoff")                                  \
    /* crdt: -11100 .. -11199 */                                                                   \
    X(VV_ECRDT_DECODE, -11101, "malformed CRDT encoding")                                          \
    X(VV_ECRDT_TYPE, -11102, "operation does not fit the document type")                           \
    X(VV_ECRDT_RANGE, -11103, "position or length out of range")                                   \
    X(VV_ECRDT_NO_DOC, -11104, "no such document")                                                 \
    X(VV_ECRDT_CAUSALITY, -11105, "update depends on operations not yet seen")                     \
    X(VV_ECRDT_COST, -11106, "update would cost too much to integrate")                            \
    X(VV_ECRDT_HISTORY, -11107, "update contradicts its replica's own history")                    \
    X(VV_ECRDT_DENIED, -11108, "not allowed by the document's access policy")                      \
    X(VV_ECRDT_POLICY, -11109, "malformed or forged document access policy")                       \
    /* store: -11200 .. -11299 */                                                                  \
    X(VV_ESTORE_CORRUPT, -11201, "stored chunk failed verification, quarantined")                  \
    X(VV_ESTORE_MISSING, -11202, "stored chunk is missing or quarantined")                         \
    X(VV_ESTORE_FULL, -11203, "store capacity would be exceeded")                                  \
    X(VV_ESTORE_TOO_LARGE, -11204, "blob larger than the store accepts")                           \
    X(VV_ESTORE_MANIFEST, -11205, "malformed manifest")                                            \
    X(VV_ESTORE_AMBIGUOUS, -11206, "one-chunk blob whose bytes are a manifest")                    \
    X(VV_ESTORE_INDEX, -11207, "store index (SQLite) error")                                       \
    /* registry: -11300 .. -11399 */                                                               \
    /* userdb: -11400 .. -11499 */                                                                 \
    /* federation: -11500 .. -11599 */                                                             \
    /* sim: -11600 .. -11699 */                                                                    \
    /* requests (src/env/request.c): -11700 .. -11799 */                                           \
    X(VV_EREQ_TIMEOUT, -11701, "request timed out")                                                \
    X(VV_EREQ_PEER_DOWN, -11702, "peer disconnected before answering")                             \
    X(VV_EREQ_BUSY, -11703, "peer busy: too many of our requests in service")                      \
    X(VV_EREQ_REMOTE, -11704, "peer answered with an error")                                       \
    X(VV_EREQ_TOO_MANY, -11705, "too many requests in flight")                                     \
    X(VV_EREQ_BAD_ANSWER, -11706, "malformed answer from peer")                                    \
    /* streams on vv_env (env_stream.h): -11800 .. -11899 */                                       \
    X(VV_ESTREAM_REFUSED, -11801, "stream refused by the receiver")                                \
    X(VV_ESTREAM_ABORTED, -11802, "stream aborted by the peer")                                    \
    X(VV_ESTREAM_PROTOCOL, -11803, "stream protocol violation")                                    \
    X(VV_ESTREAM_TOO_LARGE, -11804, "stream longer than the receiver accepts")

enum vv_err {
#define VV__ERR_ENUM(name, value, msg) name = value,
    VV_ERRORS(VV__ERR_ENUM)
#undef VV__ERR_ENUM
};

/* Returns a static, human-readable message for any code: ours, libuv's or errno's. */
const char *vv_strerror(int code);

/* Returns the symbolic name ("VV_EINVAL", "ECONNREFUSED"), or "UNKNOWN". Static string. */
const char *vv_err_name(int code);

#endif
