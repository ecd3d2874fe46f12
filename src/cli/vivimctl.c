/*
 * vivimctl: the command-line client of vivimd's JSON-RPC socket.
 *
 *   vivimctl [--socket PATH] [--json] [--timeout S] status | methods [--markdown] |
 *            call METHOD [JSON-PARAMS] | stop | reload | subscribe TOPIC |
 *            publish TOPIC TEXT|-
 *
 * Exit status: 0 success, 1 the daemon answered with an error (message on stderr), 2 the
 * daemon could not be reached (or the command line is wrong). Output is human-readable on a
 * terminal, compact JSON with --json or when stdout is not a terminal for `call`.
 *
 * The socket: --socket, else $VIVIM_SOCKET, else run/vivimd.sock next to this binary when
 * it exists (what `make run` uses, so ./build/vivimctl finds ./build/release/run/), else
 * /run/vivim/vivimd.sock.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RPC_ERROR   1
#define EXIT_UNREACHABLE 2
#define MAX_REPLY_BYTES  (256u << 20)

static int timeout_ms = 30000;

/* Bytes read from the daemon and not yet parsed: kept between call() and follow(), so a
 * notification that arrived with an answer is not lost. */
static char *rx;
static size_t rx_used, rx_cap;

/* The next complete line in rx, parsed (NULL when none is complete or it is not JSON;
 * *complete tells which). */
static json_t *next_line(bool *complete)
{
    char *nl = rx ? memchr(rx, '\n', rx_used) : NULL;
    *complete = nl != NULL;
    if (nl == NULL)
        return NULL;
    size_t line_len = (size_t)(nl - rx);
    json_t *msg = json_loadb(rx, line_len, 0, NULL);
    memmove(rx, nl + 1, rx_used - line_len - 1);
    rx_used -= line_len + 1;
    return msg;
}

/* Reads more into rx; waits at most wait_ms (-1: for ever). 1 read, 0 timed out, -1 closed
 * or failed (said on stderr). */
static int read_more(int fd, int wait_ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int pr = poll(&pfd, 1, wait_ms);
    if (pr == 0)
        return 0;
    if (pr < 0 && errno == EINTR)
        return 0;
    if (rx_used + 65536 > rx_cap) {
        rx_cap = rx_cap ? rx_cap * 2 : 65536;
        if (rx_cap > MAX_REPLY_BYTES) {
            fprintf(stderr, "vivimctl: answer too large\n");
            return -1;
        }
        rx = realloc(rx, rx_cap);
    }
    ssize_t n = pr < 0 ? -1 : read(fd, rx + rx_used, rx_cap - rx_used);
    if (n <= 0) {
        fprintf(stderr, "vivimctl: vivimd closed the connection\n");
        return -1;
    }
    rx_used += (size_t)n;
    return 1;
}

static void usage(FILE *out)
{
    fputs("usage: vivimctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND\n"
          "\n"
          "commands:\n"
          "  status                     node ID, version, uptime, addresses, modules\n"
          "  methods [--markdown]       every RPC method (Markdown: the docs/rpc.md reference)\n"
          "  call METHOD [JSON-PARAMS]  call any method; params as a JSON object or array\n"
          "  stop                       stop the daemon gracefully\n"
          "  reload                     re-read the configuration\n"
          "  subscribe TOPIC            print the topic's messages as they arrive (--json: one\n"
          "                             JSON object per line) until interrupted\n"
          "  publish TOPIC TEXT|-       publish TEXT (or standard input, at most 1 MiB)\n"
          "\n"
          "exit status: 0 success, 1 the daemon answered with an error, 2 unreachable\n",
          out);
}

static const char *default_socket(char *buf, size_t len)
{
    const char *env = getenv("VIVIM_SOCKET");
    if (env && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, len, "%s/run/vivimd.sock", exe);
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
                return buf;
        }
    }
    return "/run/vivim/vivimd.sock";
}

static int connect_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "vivimctl: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "vivimctl: cannot reach vivimd at %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Sends one request and returns the response object with id 1 (notifications skipped). */
static json_t *call(int fd, const char *method, json_t *params)
{
    json_t *req = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "id", 1, "method", method);
    if (params)
        json_object_set(req, "params", params);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    size_t len = strlen(text);
    text[len] = '\0';
    bool ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    free(text);
    if (!ok) {
        fprintf(stderr, "vivimctl: write: %s\n", strerror(errno));
        return NULL;
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        bool complete;
        json_t *msg;
        while ((msg = next_line(&complete)) != NULL || complete) {
            if (msg && json_object_get(msg, "id") && !json_object_get(msg, "method"))
                return msg;
            json_decref(msg); /* a server notification, or not JSON: not our answer */
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        int r = read_more(fd, (int)(timeout_ms - elapsed > 0 ? timeout_ms - elapsed : 0));
        if (r == 0) {
            fprintf(stderr, "vivimctl: no answer from vivimd within %d s\n", timeout_ms / 1000);
            return NULL;
        }
        if (r < 0)
            return NULL;
    }
}

/* subscribe: prints each pubsub.message notification until the connection ends. Data that
 * is printable UTF-8 text is shown as text, anything else as base64 (--json: the
 * notification's params as they came, one object per line). */
static int follow(int fd, bool raw)
{
    for (;;) {
        bool complete;
        json_t *msg;
        while ((msg = next_line(&complete)) != NULL || complete) {
            const char *m = json_string_value(json_object_get(msg, "method"));
            json_t *p = json_object_get(msg, "params");
            if (m && strcmp(m, "pubsub.message") == 0 && json_is_object(p)) {
                if (raw) {
                    char *t = json_dumps(p, JSON_COMPACT);
                    puts(t ? t : "{}");
                    free(t);
                } else {
                    const char *b64 = json_string_value(json_object_get(p, "data"));
                    size_t b64len = b64 ? strlen(b64) : 0, len = 0;
                    unsigned char *data = malloc(b64len / 4 * 3 + 3);
                    bool text = data && b64 &&
                                sodium_base642bin(data, b64len / 4 * 3 + 3, b64, b64len, NULL, &len,
                                                  NULL, sodium_base64_VARIANT_ORIGINAL) == 0;
                    for (size_t k = 0; text && k < len; k++)
                        text = data[k] >= 0x20 || data[k] == '\t' || data[k] >= 0x80;
                    const char *from = json_string_value(json_object_get(p, "from"));
                    printf("%s %.16s… #%lld: ", json_string_value(json_object_get(p, "topic")),
                           from ? from : "?",
                           (long long)json_integer_value(json_object_get(p, "seqno")));
                    if (text)
                        printf("%.*s\n", (int)len, (const char *)data);
                    else
                        printf("(base64) %s\n", b64 ? b64 : "");
                    free(data);
                }
                fflush(stdout);
            }
            json_decref(msg);
        }
        if (read_more(fd, -1) < 0)
            return EXIT_UNREACHABLE;
    }
}

/* publish's data: the argument, or standard input for "-" (at most 1 MiB). Base64, or NULL
 * (said on stderr). */
static char *publish_data(const char *arg)
{
    const size_t max = 1u << 20;
    unsigned char *data;
    size_t len = 0;
    if (strcmp(arg, "-") != 0) {
        len = strlen(arg);
        data = (unsigned char *)strdup(arg);
    } else {
        data = malloc(max + 1);
        size_t n;
        while (data && (n = fread(data + len, 1, max + 1 - len, stdin)) > 0)
            len += n;
        if (len > max) {
            fprintf(stderr, "vivimctl: standard input longer than 1 MiB\n");
            free(data);
            return NULL;
        }
    }
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    if (data && out)
        sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
    free(data);
    return out;
}

static void print_json(json_t *v, bool raw)
{
    char *s =
        json_dumps(v, raw ? JSON_COMPACT | JSON_ENCODE_ANY : JSON_INDENT(2) | JSON_ENCODE_ANY);
    puts(s ? s : "null");
    free(s);
}

static void print_status(json_t *r)
{
    json_t *listen = json_object_get(r, "listen");
    printf("node     %s\n", json_string_value(json_object_get(r, "nodeId")));
    printf("version  %s\n", json_string_value(json_object_get(r, "version")));
    printf("state    %s\n", json_string_value(json_object_get(r, "state")));
    printf("type     %s\n", json_string_value(json_object_get(r, "nodeType")));
    long long up = json_integer_value(json_object_get(r, "uptimeSeconds"));
    printf("uptime   %lldd %02lld:%02lld:%02lld\n", up / 86400, up / 3600 % 24, up / 60 % 60,
           up % 60);
    printf("rpc      %s\n", json_string_value(json_object_get(listen, "rpc")));
    printf("metrics  %s\n", json_string_value(json_object_get(listen, "metrics")));
    printf("net      %s\n", json_string_value(json_object_get(listen, "net")));
    printf("modules ");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(r, "modules"), k, v)
    {
        printf(" %s:%s", k, json_string_value(v));
    }
    printf("\n");
}

static void print_methods(json_t *doc, bool markdown)
{
    size_t i;
    json_t *m;
    json_t *methods = json_object_get(doc, "methods");
    if (!markdown) {
        json_array_foreach(methods, i, m)
        {
            printf("%-24s %s\n", json_string_value(json_object_get(m, "name")),
                   json_string_value(json_object_get(m, "summary")));
        }
        return;
    }
    printf("## Method reference\n\n"
           "Generated from `rpc.discover` (`vivimctl methods --markdown`).\n\n");
    json_array_foreach(methods, i, m)
    {
        printf("### `%s`\n\n%s\n\n", json_string_value(json_object_get(m, "name")),
               json_string_value(json_object_get(m, "summary")));
        char *p = json_dumps(json_object_get(m, "params"), JSON_INDENT(2));
        char *r = json_dumps(json_object_get(m, "result"), JSON_INDENT(2));
        printf("Parameters:\n\n```json\n%s\n```\n\nResult:\n\n```json\n%s\n```\n\n", p, r);
        free(p);
        free(r);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"markdown", no_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    const char *socket_path = NULL;
    bool raw = !isatty(STDOUT_FILENO), markdown = false;
    int c;
    while ((c = getopt_long(argc, argv, "s:jt:hV", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            socket_path = optarg;
            break;
        case 'j':
            raw = true;
            break;
        case 't':
            timeout_ms = atoi(optarg) * 1000;
            if (timeout_ms <= 0) {
                fprintf(stderr, "vivimctl: --timeout takes a positive number of seconds\n");
                return EXIT_UNREACHABLE;
            }
            break;
        case 'm':
            markdown = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vivimctl %s\n", VIVIM_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_UNREACHABLE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_UNREACHABLE;
    }
    const char *cmd = argv[optind];
    const char *method;
    json_t *params = NULL;
    if (strcmp(cmd, "status") == 0) {
        method = "node.status";
    } else if (strcmp(cmd, "methods") == 0) {
        method = "rpc.discover";
    } else if (strcmp(cmd, "stop") == 0) {
        method = "node.shutdown";
    } else if (strcmp(cmd, "reload") == 0) {
        method = "node.reload";
    } else if (strcmp(cmd, "subscribe") == 0 && optind + 1 < argc) {
        method = "pubsub.subscribe";
        params = json_pack("{s:s}", "topic", argv[optind + 1]);
    } else if (strcmp(cmd, "publish") == 0 && optind + 2 < argc) {
        method = "pubsub.publish";
        char *b64 = publish_data(argv[optind + 2]);
        if (b64 == NULL)
            return EXIT_UNREACHABLE;
        params = json_pack("{s:s, s:s}", "topic", argv[optind + 1], "data", b64);
        free(b64);
    } else if (strcmp(cmd, "call") == 0 && optind + 1 < argc) {
        method = argv[optind + 1];
        if (optind + 2 < argc) {
            json_error_t err;
            params = json_loads(argv[optind + 2], 0, &err);
            if (params == NULL || (!json_is_object(params) && !json_is_array(params))) {
                fprintf(stderr, "vivimctl: params must be a JSON object or array: %s\n",
                        params ? "got another JSON value" : err.text);
                json_decref(params);
                return EXIT_UNREACHABLE;
            }
        }
    } else {
        fprintf(stderr, "vivimctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return EXIT_UNREACHABLE;
    }
    char sockbuf[PATH_MAX + 32];
    if (socket_path == NULL)
        socket_path = default_socket(sockbuf, sizeof(sockbuf));
    int fd = connect_socket(socket_path);
    if (fd < 0) {
        json_decref(params);
        return EXIT_UNREACHABLE;
    }
    json_t *resp = call(fd, method, params);
    json_decref(params);
    if (resp != NULL && strcmp(cmd, "subscribe") == 0 && !json_object_get(resp, "error")) {
        if (!raw)
            fprintf(stderr, "vivimctl: subscribed to %s (subscription %lld)\n", argv[optind + 1],
                    (long long)json_integer_value(
                        json_object_get(json_object_get(resp, "result"), "subscriptionId")));
        json_decref(resp);
        int rc = follow(fd, raw);
        close(fd);
        free(rx);
        return rc;
    }
    close(fd);
    free(rx);
    if (resp == NULL)
        return EXIT_UNREACHABLE;
    json_t *err = json_object_get(resp, "error");
    if (err) {
        json_t *data = json_object_get(err, "data");
        fprintf(stderr, "vivimctl: %s: error %lld: %s%s%s\n", method,
                (long long)json_integer_value(json_object_get(err, "code")),
                json_string_value(json_object_get(err, "message")), data ? " " : "",
                json_is_string(data) ? json_string_value(data) : "");
        json_decref(resp);
        return EXIT_RPC_ERROR;
    }
    json_t *result = json_object_get(resp, "result");
    if (raw && !markdown)
        print_json(result, true);
    else if (strcmp(cmd, "status") == 0)
        print_status(result);
    else if (strcmp(cmd, "methods") == 0)
        print_methods(result, markdown);
    else if (strcmp(cmd, "reload") == 0)
        printf("reloaded: %s\n", json_string_value(json_object_get(result, "changes")));
    else if (strcmp(cmd, "stop") == 0)
        printf("vivimd is stopping\n");
    else
        print_json(result, false);
    json_decref(resp);
    return 0;
}
