/*
 * Fuzz target: the monitor's HTTP endpoint, over a real loopback TCP connection to the
 * real server (request assembly, limits, routing, event streams). Each input is sent as a
 * client would, the client half-closes, and the loop runs until the server has closed the
 * connection; the server must never crash, and must always close it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "monitor/monitor_internal.h"
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/monitor.h"
#include "vivim/node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static struct vv_node node;
static uint16_t port;
static uv_timer_t tick;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void setup(void)
{
    uv_loop_init(&loop);
    vv_config_defaults(vv_node_config_schema(), &node.config);
    struct vv_monitor_settings *ms = vv_config_get_mut(&node.config, &vv_monitor_settings_section);
    vv_free(ms->listen);
    ms->listen = vv_xstrdup("127.0.0.1:0");
    node.loop = &loop;
    node.ready = true;
    if (vv_monitor_module.init(&node) != 0 || vv_monitor_module.start(&node) != 0)
        abort();
    const char *url = node.monitor->url; /* http://127.0.0.1:PORT */
    port = (uint16_t)atoi(strrchr(url, ':') + 1);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 1, 1); /* keeps UV_RUN_ONCE from blocking long */
    vv_monitor_event(node.monitor, "fuzz", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size > 65536)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    for (int i = 0; i < 50 && node.monitor->n_conns == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    size_t off = 0;
    char sink[65536];
    for (int i = 0; i < 2000 && off < size; i++) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EAGAIN)
            break;
        uv_run(&loop, UV_RUN_ONCE);
        while (recv(fd, sink, sizeof(sink), 0) > 0) {
        }
    }
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_ONCE);
        while (recv(fd, sink, sizeof(sink), 0) > 0) {
        }
    }
    close(fd);
    for (int i = 0; i < 2000 && node.monitor->n_conns > 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    if (node.monitor->n_conns != 0)
        abort(); /* a connection the server never let go of */
    return 0;
}
