/*
 * Fuzz target: the JSON-RPC request decoder and dispatcher, fed arbitrary bytes as lines.
 * Every reply it writes must itself be valid JSON ending in exactly one newline.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/rpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vv_rpc_request *held;

static int check_line(void *io, const char *line, size_t len)
{
    (void)io;
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL)
        abort();
    json_t *v = json_loadb(line, len - 1, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        abort();
    json_decref(v);
    return 0;
}

static struct vv_rpc_answer echo(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    return vv_rpc_reply(req, json_incref(params));
}

static struct vv_rpc_answer later(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)params;
    (void)d;
    if (held != NULL) {
        vv_rpc_fail(held, -32000, "superseded");
    }
    held = req;
    return vv_rpc_pending(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_rpc *rpc = vv_rpc_new(NULL);
    const struct vv_rpc_method m1 = {"echo", echo, NULL, "", NULL, NULL};
    const struct vv_rpc_method m2 = {"later", later, NULL, "", NULL, NULL};
    vv_rpc_register(rpc, &m1);
    vv_rpc_register(rpc, &m2);
    struct vv_rpc_conn *c = vv_rpc_conn_new(rpc, check_line, NULL);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        vv_rpc_conn_input(c, p, (size_t)(le - p));
        p = le + 1;
    }
    vv_rpc_conn_close(c);
    if (held) {
        vv_rpc_reply(held, json_true()); /* to a closed connection: dropped */
        held = NULL;
    }
    vv_rpc_free(rpc);
    return 0;
}
