/*
 * Loading and validating vivimd.conf.
 *
 * The file is INI, parsed by inih. Every section is declared by the module that owns it
 * (struct vv_config_section: its keys with type, bounds, default, documentation and whether
 * SIGHUP may change each); the program hands the loader its schema, the list of sections.
 * Anything else in the file is an error with the file name and line number. Values are checked
 * here, once, so the modules can trust the struct they are given. Lines are bounded
 * (VV_CONFIG_MAX_LINE_BYTES) and checked before inih sees them, so a long line is reported, never
 * silently split.
 *
 * Everything start-up would refuse about a value is refused here, so that `vivimd
 * --check-config`, start-up and reload (which all load through vv_config_parse) agree: each
 * declaration's check functions test a value the way its module will use it (listen
 * addresses with the libuv calls the listeners use, the region with the hello decoder every
 * peer runs, the PostgreSQL URL with libpq's parser). Defaults are text parsed through the
 * same checks, so a declared default cannot be one the file would refuse.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "vivim/common.h"
#include "vivim/config.h"

#define VV_CONFIG_MAX_LINE_BYTES 4096 /* a value longer than this is surely a mistake */
#define VV_CONFIG_MAX_PATH_BYTES 4096
#define VV_CONFIG_MAX_KEYS       64 /* per section: the line table is sized by it */

const struct vv_config_choice vv_config_sync_choices[] = {
    {"normal", VV_CONFIG_SYNC_NORMAL},
    {"full", VV_CONFIG_SYNC_FULL},
    {NULL, 0},
};

static size_t section_index(const struct vv_config_schema *schema,
                            const struct vv_config_section *s)
{
    for (size_t i = 0; i < schema->n_sections; i++)
        if (schema->sections[i] == s)
            return i;
    abort(); /* a section outside the program's schema: a programming error */
}

const void *vv_config_get(const struct vv_config *cfg, const struct vv_config_section *s)
{
    return cfg->values[section_index(cfg->schema, s)];
}

void *vv_config_get_mut(struct vv_config *cfg, const struct vv_config_section *s)
{
    return cfg->values[section_index(cfg->schema, s)];
}

static void free_values(const struct vv_config_section *sec, void *values)
{
    if (values == NULL)
        return;
    for (size_t i = 0; i < sec->n_keys; i++) {
        if (sec->keys[i].type != VV_CONFIG_TEXT)
            continue;
        char **p = (char **)((char *)values + sec->keys[i].offset);
        vv_free(*p);
    }
    vv_free(values);
}

void vv_config_free(struct vv_config *cfg)
{
    if (cfg->schema != NULL)
        for (size_t i = 0; i < cfg->schema->n_sections; i++) {
            free_values(cfg->schema->sections[i], cfg->values[i]);
            cfg->values[i] = NULL;
        }
    vv_free(cfg->path);
    cfg->path = NULL;
}

/* ---- value checks --------------------------------------------------------------------- */

static int parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out, char *why,
                     size_t why_len)
{
    if (*v == '\0' || *v == '-' || *v == '+') {
        snprintf(why, why_len, "expected a whole number from %u to %u", min, max);
        return VV_ECONFIG_VALUE;
    }
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end != '\0') {
        snprintf(why, why_len, "expected a whole number from %u to %u", min, max);
        return VV_ECONFIG_VALUE;
    }
    if (errno == ERANGE || n < min || n > max) {
        snprintf(why, why_len, "%s is out of range (%u to %u)", v, min, max);
        return VV_ECONFIG_RANGE;
    }
    *out = (uint32_t)n;
    return 0;
}

/* A DNS name or a numeric address: letters, digits, '-', '.', and ':' inside brackets. */
static bool valid_host(const char *h, size_t len, bool bracketed)
{
    if (len == 0 || len > 253)
        return false;
    char buf[256];
    memcpy(buf, h, len);
    buf[len] = '\0';
    if (bracketed) {
        struct in6_addr a6;
        return inet_pton(AF_INET6, buf, &a6) == 1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

int vv_config_split_hostport(const char *s, char *host, size_t host_len, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    bool bracketed = false;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return VV_EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        bracketed = true;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return VV_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (!valid_host(h, hl, bracketed) || hl + 1 > host_len)
        return VV_EINVAL;
    uint32_t p;
    char why[8];
    if (parse_u32(colon + 1, 0, 65535, &p, why, sizeof(why)) != 0)
        return VV_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int vv_config_check_hostport(const char *v, char *why, size_t why_len)
{
    char host[256];
    uint16_t port;
    if (vv_config_split_hostport(v, host, sizeof(host), &port) != 0) {
        snprintf(why, why_len, "expected host:port or [ipv6]:port with a port from 0 to 65535");
        return VV_ECONFIG_VALUE;
    }
    return 0;
}

/* host:port whose host is an IP address, tested with the libuv calls the listeners bind
 * with (src/net/tcp.c, src/monitor/http.c). */
int vv_config_check_listen(const char *v, char *why, size_t why_len)
{
    int rc = vv_config_check_hostport(v, why, why_len);
    if (rc != 0)
        return rc;
    char host[256];
    uint16_t port;
    vv_config_split_hostport(v, host, sizeof(host), &port);
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (uv_ip4_addr(host, port, &a4) == 0 ||
        (strchr(host, ':') != NULL && uv_ip6_addr(host, port, &a6) == 0))
        return 0;
    snprintf(why, why_len,
             "expected an IP address and port (0.0.0.0:4747, [::]:4747); host names are not "
             "resolved");
    return VV_ECONFIG_VALUE;
}

int vv_config_check_max_bytes(const char *v, size_t max, const char *who, char *why, size_t why_len)
{
    size_t n = strlen(v);
    if (n <= max)
        return 0;
    snprintf(why, why_len, "%zu bytes; %s at most %zu", n, who, max);
    return VV_ECONFIG_RANGE;
}

int vv_config_check_path(const char *v, char *why, size_t why_len)
{
    if (*v == '\0' || strlen(v) >= VV_CONFIG_MAX_PATH_BYTES) {
        snprintf(why, why_len, "expected a path");
        return VV_ECONFIG_VALUE;
    }
    return 0;
}

/* "a or b" for two choices, "one of a, b, c" for more. */
static void list_choices(const struct vv_config_choice *c, char *out, size_t len)
{
    size_t count = 0, n = 0;
    while (c[count].name != NULL)
        count++;
    out[0] = '\0';
    if (count == 2) {
        snprintf(out, len, "%s or %s", c[0].name, c[1].name);
        return;
    }
    n = (size_t)snprintf(out, len, "one of ");
    for (size_t i = 0; i < count && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? ", " : "", c[i].name);
}

static int set_key(void *values, const struct vv_config_key *k, const char *v, char *why,
                   size_t why_len)
{
    void *field = (char *)values + k->offset;
    int rc;
    switch (k->type) {
    case VV_CONFIG_U32:
        return parse_u32(v, k->min, k->max, field, why, why_len);
    case VV_CONFIG_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0 ||
            strcmp(v, "1") == 0)
            *(bool *)field = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0 ||
                 strcmp(v, "0") == 0)
            *(bool *)field = false;
        else {
            snprintf(why, why_len, "expected true, false, yes, no, on, off, 1 or 0");
            return VV_ECONFIG_VALUE;
        }
        return 0;
    case VV_CONFIG_ENUM:
        for (size_t i = 0; k->choices[i].name != NULL; i++)
            if (strcmp(v, k->choices[i].name) == 0) {
                *(int *)field = k->choices[i].value;
                return 0;
            }
        char list[160];
        list_choices(k->choices, list, sizeof(list));
        snprintf(why, why_len, "expected %s", list);
        return VV_ECONFIG_VALUE;
    case VV_CONFIG_TEXT:
        if (k->check != NULL && (rc = k->check(v, why, why_len)) != 0)
            return rc;
        break;
    }
    char **s = field;
    vv_free(*s);
    *s = vv_xstrdup(v);
    return 0;
}

/* The text of a key's current value, as the file would write it; NULL-terminated in buf. */
static const char *value_text(const void *values, const struct vv_config_key *k, char *buf,
                              size_t len)
{
    const void *field = (const char *)values + k->offset;
    switch (k->type) {
    case VV_CONFIG_U32:
        snprintf(buf, len, "%u", *(const uint32_t *)field);
        return buf;
    case VV_CONFIG_BOOL:
        return *(const bool *)field ? "true" : "false";
    case VV_CONFIG_ENUM:
        for (size_t i = 0; k->choices[i].name != NULL; i++)
            if (k->choices[i].value == *(const int *)field)
                return k->choices[i].name;
        return "?";
    case VV_CONFIG_TEXT: {
        const char *s = *(char *const *)field;
        return s ? s : "";
    }
    }
    return "";
}

void vv_config_defaults(const struct vv_config_schema *schema, struct vv_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->schema = schema;
    for (size_t i = 0; i < schema->n_sections; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        if (sec->n_keys > VV_CONFIG_MAX_KEYS)
            abort(); /* raise VV_CONFIG_MAX_KEYS */
        cfg->values[i] = vv_xcalloc(1, sec->size);
        for (size_t j = 0; j < sec->n_keys; j++) {
            char why[256];
            if (set_key(cfg->values[i], &sec->keys[j], sec->keys[j].def, why, sizeof(why)) != 0) {
                /* A declaration whose default its own checks refuse: caught by every test. */
                fprintf(stderr, "vivimd: bad default for [%s] %s: %s\n", sec->name,
                        sec->keys[j].name, why);
                abort();
            }
        }
    }
}

/* ---- parsing -------------------------------------------------------------------------- */

struct parse_ctx {
    struct vv_config *cfg;
    int rc;        /* first error */
    char why[256]; /* its message, without the file:line prefix */
    /* where each key was set; 0 = not set */
    int line_of[VV_CONFIG_MAX_SECTIONS][VV_CONFIG_MAX_KEYS];
    const char *text;
    size_t len;
    /* inih's handler is not told its line: our reader hands inih one line per call and
     * counts them, so that checks made after every key is read can name a real line. */
    size_t pos;    /* next byte of text for the reader */
    int line;      /* line of the text last handed to inih */
    bool mid_line; /* the last piece handed over did not end its line */
};

static int find_section(const struct vv_config_schema *schema, const char *name, size_t len)
{
    for (size_t i = 0; i < schema->n_sections; i++)
        if (strlen(schema->sections[i]->name) == len &&
            memcmp(schema->sections[i]->name, name, len) == 0)
            return (int)i;
    return -1;
}

static int find_key(const struct vv_config_section *sec, const char *name)
{
    for (size_t j = 0; j < sec->n_keys; j++)
        if (strcmp(sec->keys[j].name, name) == 0)
            return (int)j;
    return -1;
}

/* The line that set key name of section si, or 0 if the file did not set it. */
static int line_of(const struct parse_ctx *ctx, size_t si, const char *name)
{
    if (name == NULL)
        return 0;
    int j = find_key(ctx->cfg->schema->sections[si], name);
    if (j < 0)
        abort(); /* a section check naming a key it does not declare */
    return ctx->line_of[si][j];
}

/* ini_reader over ctx->text, as inih's string reader, counting lines. */
static char *read_line(char *str, int num, void *stream)
{
    struct parse_ctx *ctx = stream;
    if (ctx->pos >= ctx->len || num < 2)
        return NULL;
    if (!ctx->mid_line)
        ctx->line++;
    size_t n = 0;
    while (n < (size_t)num - 1 && ctx->pos < ctx->len) {
        char c = ctx->text[ctx->pos++];
        str[n++] = c;
        if (c == '\n')
            break;
    }
    str[n] = '\0';
    ctx->mid_line = str[n - 1] != '\n';
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *ctx = user;
    const struct vv_config_schema *schema = ctx->cfg->schema;
    if (*section == '\0') {
        snprintf(ctx->why, sizeof(ctx->why), "'%.64s' is outside any [section]", name);
        ctx->rc = VV_ECONFIG_SYNTAX;
        return 0;
    }
    int si = find_section(schema, section, strlen(section));
    if (si < 0) {
        snprintf(ctx->why, sizeof(ctx->why), "unknown section [%.64s]", section);
        ctx->rc = VV_ECONFIG_UNKNOWN;
        return 0;
    }
    const struct vv_config_section *sec = schema->sections[si];
    int j = find_key(sec, name);
    if (j < 0) {
        snprintf(ctx->why, sizeof(ctx->why), "unknown key '%.64s' in section [%s]", name, section);
        ctx->rc = VV_ECONFIG_UNKNOWN;
        return 0;
    }
    if (ctx->line_of[si][j] != 0) {
        snprintf(ctx->why, sizeof(ctx->why), "[%s] %s is set twice", section, name);
        ctx->rc = VV_ECONFIG_VALUE;
        return 0;
    }
    ctx->line_of[si][j] = ctx->line;
    char why[200];
    int rc = set_key(ctx->cfg->values[si], &sec->keys[j], value, why, sizeof(why));
    if (rc != 0) {
        snprintf(ctx->why, sizeof(ctx->why), "[%s] %s: %s", section, name, why);
        ctx->rc = rc;
        return 0;
    }
    return 1;
}

/*
 * Checks what inih would otherwise accept or mangle: NUL bytes, over-long lines, sections
 * without keys (an unknown empty section is still a mistake), and keys before any section.
 * Returns the 1-based line of the first problem, or 0.
 */
static int prescan(struct parse_ctx *ctx)
{
    const char *p = ctx->text, *end = ctx->text + ctx->len;
    int line = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) > VV_CONFIG_MAX_LINE_BYTES) {
            snprintf(ctx->why, sizeof(ctx->why), "line longer than %d bytes",
                     VV_CONFIG_MAX_LINE_BYTES);
            ctx->rc = VV_ECONFIG_SYNTAX;
            return line;
        }
        if (memchr(p, '\0', (size_t)(le - p)) != NULL) {
            snprintf(ctx->why, sizeof(ctx->why), "NUL byte in the file");
            ctx->rc = VV_ECONFIG_SYNTAX;
            return line;
        }
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < le && *q == '[') {
            const char *close = memchr(q, ']', (size_t)(le - q));
            if (close != NULL) {
                size_t n = (size_t)(close - q - 1);
                if (find_section(ctx->cfg->schema, q + 1, n) < 0) {
                    snprintf(ctx->why, sizeof(ctx->why), "unknown section [%.*s]",
                             (int)VV_MIN(n, 64), q + 1);
                    ctx->rc = VV_ECONFIG_UNKNOWN;
                    return line;
                }
            }
        }
        if (!nl)
            break;
        p = nl + 1;
        line++;
    }
    return 0;
}

int vv_config_parse(const char *name, const char *text, size_t len,
                    const struct vv_config_schema *schema, struct vv_config *cfg,
                    char err[VV_CONFIG_ERR_BYTES])
{
    struct parse_ctx *ctx = vv_xcalloc(1, sizeof(*ctx));
    ctx->cfg = cfg;
    ctx->text = text;
    ctx->len = len;
    vv_config_defaults(schema, cfg);
    err[0] = '\0';

    int line = len > VV_CONFIG_MAX_BYTES ? 1 : 0;
    if (line) {
        snprintf(ctx->why, sizeof(ctx->why), "file larger than %d bytes", VV_CONFIG_MAX_BYTES);
        ctx->rc = VV_ECONFIG_SYNTAX;
    } else {
        line = prescan(ctx);
    }
    if (line == 0) {
        /* inih's line buffer must hold our longest line plus "\r\n\0"; these are the
         * Debian build's run-time knobs, set for each parse. */
        ini_use_stack = false;
        ini_allow_realloc = true;
        ini_max_line = VV_CONFIG_MAX_LINE_BYTES + 3;
        ini_allow_multiline = false;
        ini_stop_on_first_error = true;
        line = ini_parse_stream(read_line, ctx, handler, ctx);
        if (line > 0 && ctx->rc == 0) {
            snprintf(ctx->why, sizeof(ctx->why),
                     "syntax error (expected [section], key = value or a comment)");
            ctx->rc = VV_ECONFIG_SYNTAX;
        } else if (line < 0) {
            snprintf(ctx->why, sizeof(ctx->why), "out of memory while parsing");
            ctx->rc = VV_ENOMEM;
            line = 0;
        }
    }
    /* Relations between keys, once all are read: keys may come in any order, so the error
     * names the later of the lines that set the keys in conflict (a declared default never
     * conflicts, so at least one of them was set). */
    for (size_t i = 0; i < schema->n_sections && ctx->rc == 0; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        if (sec->check == NULL)
            continue;
        const char *a = NULL, *b = NULL;
        int rc = sec->check(cfg->values[i], ctx->why, sizeof(ctx->why), &a, &b);
        if (rc != 0) {
            ctx->rc = rc;
            line = VV_MAX(line_of(ctx, i, a), line_of(ctx, i, b));
        }
    }
    int rc = ctx->rc;
    if (rc != 0) {
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s:%d: %s", name, line, ctx->why);
        vv_config_free(cfg);
    } else {
        cfg->path = vv_xstrdup(name);
    }
    vv_free(ctx);
    return rc;
}

int vv_config_load(const char *path, const struct vv_config_schema *schema, struct vv_config *cfg,
                   char err[VV_CONFIG_ERR_BYTES])
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s: cannot open: %s", path, strerror(errno));
        memset(cfg, 0, sizeof(*cfg));
        return VV_ECONFIG_OPEN;
    }
    size_t cap = 4096, len = 0;
    char *buf = vv_xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len > VV_CONFIG_MAX_BYTES)
            break;
        if (len == cap)
            buf = vv_xrealloc(buf, cap *= 2);
    }
    int read_err = ferror(f);
    fclose(f);
    if (read_err) {
        vv_free(buf);
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s: read error", path);
        memset(cfg, 0, sizeof(*cfg));
        return VV_ECONFIG_OPEN;
    }
    int rc = vv_config_parse(path, buf, len, schema, cfg, err);
    vv_free(buf);
    return rc;
}

/* Whether the key's value differs between two structs of its section. */
static bool key_differs(const struct vv_config_key *k, const void *a, const void *b)
{
    const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    switch (k->type) {
    case VV_CONFIG_U32:
        return *(const uint32_t *)fa != *(const uint32_t *)fb;
    case VV_CONFIG_BOOL:
        return *(const bool *)fa != *(const bool *)fb;
    case VV_CONFIG_ENUM:
        return *(const int *)fa != *(const int *)fb;
    case VV_CONFIG_TEXT: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return strcmp(sa ? sa : "", sb ? sb : "") != 0;
    }
    }
    return false;
}

void vv_config_diff(const struct vv_config *a, const struct vv_config *b, vv_config_change_cb fn,
                    void *arg)
{
    const struct vv_config_schema *schema = a->schema;
    for (size_t i = 0; i < schema->n_sections; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        for (size_t j = 0; j < sec->n_keys; j++)
            if (key_differs(&sec->keys[j], a->values[i], b->values[i]))
                fn(sec->name, sec->keys[j].name, sec->keys[j].reload, arg);
    }
}

void vv_config_apply_reloadable(struct vv_config *dst, const struct vv_config *src)
{
    const struct vv_config_schema *schema = dst->schema;
    for (size_t i = 0; i < schema->n_sections; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        for (size_t j = 0; j < sec->n_keys; j++) {
            const struct vv_config_key *k = &sec->keys[j];
            if (!k->reload || !key_differs(k, dst->values[i], src->values[i]))
                continue;
            void *fd = (char *)dst->values[i] + k->offset;
            const void *fs = (const char *)src->values[i] + k->offset;
            switch (k->type) {
            case VV_CONFIG_U32:
                *(uint32_t *)fd = *(const uint32_t *)fs;
                break;
            case VV_CONFIG_BOOL:
                *(bool *)fd = *(const bool *)fs;
                break;
            case VV_CONFIG_ENUM:
                *(int *)fd = *(const int *)fs;
                break;
            case VV_CONFIG_TEXT:
                vv_free(*(char **)fd);
                *(char **)fd = vv_xstrdup(*(char *const *)fs);
                break;
            }
        }
    }
}

void vv_config_print(const struct vv_config *cfg, FILE *out)
{
    const struct vv_config_schema *schema = cfg->schema;
    for (size_t i = 0; i < schema->n_sections; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        fprintf(out, "%s[%s]\n", i ? "\n" : "", sec->name);
        for (size_t j = 0; j < sec->n_keys; j++) {
            char buf[16];
            fprintf(out, "%s = %s\n", sec->keys[j].name,
                    value_text(cfg->values[i], &sec->keys[j], buf, sizeof(buf)));
        }
    }
}

#define VV_CONFIG_DOC_COLUMNS 92 /* the width of the generated file's comments */

/* Writes text as ';' comment lines of at most VV_CONFIG_DOC_COLUMNS; "\n" starts a new line,
 * "\n\n" leaves an empty comment line. */
static void print_wrapped(FILE *out, const char *text)
{
    const char *p = text;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t plen = nl ? (size_t)(nl - p) : strlen(p);
        if (plen == 0) {
            fputs(";\n", out);
        } else {
            const char *q = p, *end = p + plen;
            while (q < end) {
                size_t room = VV_CONFIG_DOC_COLUMNS - 2, n = (size_t)(end - q);
                if (n > room) {
                    n = room;
                    while (n > 0 && q[n] != ' ')
                        n--;
                    if (n == 0) /* a word longer than a line */
                        for (n = room; q + n < end && q[n] != ' ';)
                            n++;
                }
                fprintf(out, "; %.*s\n", (int)n, q);
                q += n;
                while (q < end && *q == ' ')
                    q++;
            }
        }
        p += plen;
        if (*p == '\n')
            p++;
    }
}

void vv_config_print_defaults(const struct vv_config_schema *schema, FILE *out)
{
    struct vv_config cfg;
    vv_config_defaults(schema, &cfg);
    if (schema->preamble != NULL)
        print_wrapped(out, schema->preamble);
    for (size_t i = 0; i < schema->n_sections; i++) {
        const struct vv_config_section *sec = schema->sections[i];
        fprintf(out, "\n[%s]\n", sec->name);
        if (sec->doc != NULL)
            print_wrapped(out, sec->doc);
        for (size_t j = 0; j < sec->n_keys; j++) {
            const struct vv_config_key *k = &sec->keys[j];
            char buf[16];
            if (k->doc != NULL) {
                /* Whether SIGHUP applies it comes from the declaration, never from prose. */
                char *doc = vv_xmalloc(strlen(k->doc) + 32);
                sprintf(doc, "%s%s", k->doc, k->reload ? " Changes on reload." : "");
                print_wrapped(out, doc);
                vv_free(doc);
            }
            const char *v = value_text(cfg.values[i], k, buf, sizeof(buf));
            fprintf(out, "%s =%s%s\n", k->name, *v ? " " : "", v);
        }
    }
    vv_config_free(&cfg);
}
