/*
 * The metrics registry and its Prometheus text rendering (exposition format 0.0.4).
 *
 * A family has a kind, label names and children (one per distinct label-value tuple); an
 * unlabelled family has exactly one child, the one its handle points to. The number of
 * children is bounded: past VV_METRICS_MAX_CHILDREN, new tuples share one child whose
 * values are all "other", and the overflow is counted. Observing an existing child
 * allocates nothing. Loop thread only.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/metrics.h"

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM, K_GAUGE_FN, K_COUNTER_FN };

struct family;

/* The public handle types are all a child; the family says which kind it is. */
struct child {
    struct family *fam;
    char *values[VV_METRICS_MAX_LABELS];
    uint64_t count;    /* counter; histogram observation count */
    double value;      /* gauge; histogram sum */
    uint64_t *buckets; /* histogram: non-cumulative counts per bound */
};

struct vv_counter {
    struct child c;
};
struct vv_gauge {
    struct child c;
};
struct vv_histogram {
    struct child c;
};

struct family {
    struct vv_metrics *reg;
    char *name, *help;
    enum kind kind;
    int n_labels;
    char *labels[VV_METRICS_MAX_LABELS];
    char *label_spec;   /* as registered, for duplicate checks */
    struct child *root; /* the unlabelled child, or the labelled family's handle */
    struct child **children;
    size_t n_children, cap_children;
    struct child *other;
    double *bounds;
    size_t n_bounds;
    double (*fn)(void *);
    void *fn_data;
};

struct vv_metrics {
    struct family **fams;
    size_t n, cap;
    struct vv_counter *overflow;
};

const double vv_metrics_latency_seconds_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                     1,      2.5,     5,      10};
const size_t vv_metrics_latency_seconds_buckets_len =
    sizeof(vv_metrics_latency_seconds_buckets) / sizeof(vv_metrics_latency_seconds_buckets[0]);

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vivimd: metrics: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort(); /* a programming error, caught by the first test that runs the code */
}

static bool valid_name(const char *s, bool label)
{
    if (!*s || (label && s[0] == '_' && s[1] == '_'))
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                     (!label && *p == ':');
        if (!alpha && !(p != s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static void free_child(struct child *c, int n_labels)
{
    for (int i = 0; i < n_labels; i++)
        vv_free(c->values[i]);
    vv_free(c->buckets);
    vv_free(c);
}

struct vv_metrics *vv_metrics_new(void)
{
    struct vv_metrics *m = vv_xcalloc(1, sizeof(*m));
    m->overflow = vv_metrics_counter(
        m, "vivimd_metrics_cardinality_overflow_total",
        "Label value tuples folded into \"other\" because a family had too many.", NULL);
    return m;
}

void vv_metrics_free(struct vv_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        struct family *f = m->fams[i];
        for (size_t k = 0; k < f->n_children; k++)
            free_child(f->children[k], f->n_labels);
        if (f->other)
            free_child(f->other, f->n_labels);
        free_child(f->root, 0);
        for (int k = 0; k < f->n_labels; k++)
            vv_free(f->labels[k]);
        vv_free(f->children);
        vv_free(f->bounds);
        vv_free(f->label_spec);
        vv_free(f->name);
        vv_free(f->help);
        vv_free(f);
    }
    vv_free(m->fams);
    vv_free(m);
}

static struct child *new_child(struct family *f)
{
    struct child *c = vv_xcalloc(1, sizeof(*c));
    c->fam = f;
    if (f->kind == K_HISTOGRAM)
        c->buckets = vv_xcalloc(f->n_bounds + 1, sizeof(uint64_t));
    return c;
}

static struct family *add_family(struct vv_metrics *m, const char *name, const char *help,
                                 enum kind kind, const char *labels)
{
    if (!valid_name(name, false))
        die("invalid metric name '%s'", name);
    for (size_t i = 0; i < m->n; i++) {
        struct family *f = m->fams[i];
        if (strcmp(f->name, name) != 0)
            continue;
        if (f->kind != kind || strcmp(f->label_spec, labels ? labels : "") != 0)
            die("'%s' registered twice with different kinds or labels", name);
        return f;
    }
    if ((kind == K_COUNTER || kind == K_COUNTER_FN) &&
        (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total") != 0))
        die("counter '%s' must end in _total", name);
    struct family *f = vv_xcalloc(1, sizeof(*f));
    f->reg = m;
    f->name = vv_xstrdup(name);
    f->help = vv_xstrdup(help);
    f->kind = kind;
    f->label_spec = vv_xstrdup(labels ? labels : "");
    if (labels && *labels) {
        char *copy = vv_xstrdup(labels), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (f->n_labels == VV_METRICS_MAX_LABELS || !valid_name(t, true) ||
                strcmp(t, "le") == 0)
                die("invalid labels '%s' for '%s'", labels, name);
            f->labels[f->n_labels++] = vv_xstrdup(t);
        }
        vv_free(copy);
    }
    f->root = vv_xcalloc(1, sizeof(*f->root));
    f->root->fam = f;
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 32;
        m->fams = vv_xrealloc(m->fams, m->cap * sizeof(*m->fams));
    }
    m->fams[m->n++] = f;
    return f;
}

struct vv_counter *vv_metrics_counter(struct vv_metrics *m, const char *name, const char *help,
                                      const char *label_names)
{
    return (struct vv_counter *)add_family(m, name, help, K_COUNTER, label_names)->root;
}

struct vv_gauge *vv_metrics_gauge(struct vv_metrics *m, const char *name, const char *help,
                                  const char *label_names)
{
    return (struct vv_gauge *)add_family(m, name, help, K_GAUGE, label_names)->root;
}

struct vv_histogram *vv_metrics_histogram(struct vv_metrics *m, const char *name, const char *help,
                                          const char *label_names, const double *bounds,
                                          size_t n_bounds)
{
    struct family *f = add_family(m, name, help, K_HISTOGRAM, label_names);
    if (f->bounds == NULL) {
        for (size_t i = 1; i < n_bounds; i++)
            if (!(bounds[i] > bounds[i - 1]))
                die("bounds of '%s' must increase", name);
        f->bounds = vv_xmalloc((n_bounds ? n_bounds : 1) * sizeof(double));
        memcpy(f->bounds, bounds, n_bounds * sizeof(double));
        f->n_bounds = n_bounds;
        f->root->buckets = vv_xcalloc(n_bounds + 1, sizeof(uint64_t));
    }
    return (struct vv_histogram *)f->root;
}

void vv_metrics_gauge_fn(struct vv_metrics *m, const char *name, const char *help,
                         double (*fn)(void *data), void *data)
{
    struct family *f = add_family(m, name, help, K_GAUGE_FN, NULL);
    f->fn = fn;
    f->fn_data = data;
}

void vv_metrics_counter_fn(struct vv_metrics *m, const char *name, const char *help,
                           double (*fn)(void *data), void *data)
{
    struct family *f = add_family(m, name, help, K_COUNTER_FN, NULL);
    f->fn = fn;
    f->fn_data = data;
}

/* ---- labelled children ------------------------------------------------------------------- */

static struct child *lookup(struct child *handle, const char *const *values)
{
    struct family *f = handle->fam;
    if (f->n_labels == 0)
        return handle;
    for (size_t i = 0; i < f->n_children; i++) {
        struct child *c = f->children[i];
        int k = 0;
        while (k < f->n_labels && strcmp(c->values[k], values[k]) == 0)
            k++;
        if (k == f->n_labels)
            return c;
    }
    if (f->n_children >= VV_METRICS_MAX_CHILDREN) {
        if (f->other == NULL) {
            f->other = new_child(f);
            for (int k = 0; k < f->n_labels; k++)
                f->other->values[k] = vv_xstrdup("other");
        }
        if (f->reg->overflow)
            vv_counter_inc(f->reg->overflow);
        return f->other;
    }
    struct child *c = new_child(f);
    for (int k = 0; k < f->n_labels; k++)
        c->values[k] = vv_xstrdup(values[k] ? values[k] : "");
    if (f->n_children == f->cap_children) {
        f->cap_children = f->cap_children ? 2 * f->cap_children : 8;
        f->children = vv_xrealloc(f->children, f->cap_children * sizeof(*f->children));
    }
    f->children[f->n_children++] = c;
    return c;
}

struct vv_counter *vv_counter_labels(struct vv_counter *family, const char *const *values)
{
    return (struct vv_counter *)lookup(&family->c, values);
}

struct vv_gauge *vv_gauge_labels(struct vv_gauge *family, const char *const *values)
{
    return (struct vv_gauge *)lookup(&family->c, values);
}

struct vv_histogram *vv_histogram_labels(struct vv_histogram *family, const char *const *values)
{
    return (struct vv_histogram *)lookup(&family->c, values);
}

void vv_counter_inc(struct vv_counter *c)
{
    c->c.count++;
}

void vv_counter_add(struct vv_counter *c, uint64_t n)
{
    c->c.count += n;
}

uint64_t vv_counter_value(const struct vv_counter *c)
{
    return c->c.count;
}

void vv_gauge_set(struct vv_gauge *g, double v)
{
    g->c.value = v;
}

void vv_gauge_add(struct vv_gauge *g, double delta)
{
    g->c.value += delta;
}

double vv_gauge_value(const struct vv_gauge *g)
{
    return g->c.value;
}

void vv_histogram_observe(struct vv_histogram *h, double v)
{
    struct child *c = &h->c;
    struct family *f = c->fam;
    size_t i = 0;
    while (i < f->n_bounds && v > f->bounds[i])
        i++;
    c->buckets[i]++;
    c->count++;
    c->value += v;
}

/* ---- rendering ------------------------------------------------------------------------ */

struct out {
    char *p;
    size_t len, cap;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (n > 0 ? (size_t)n : 0);
        o->p = vv_xrealloc(o->p, o->cap);
    }
}

static void emit_escaped(struct out *o, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            emit(o, "\\\\");
        else if (*s == '\n')
            emit(o, "\\n");
        else if (quote && *s == '"')
            emit(o, "\\\"");
        else
            emit(o, "%c", *s);
    }
}

/* The shortest text that reads back as exactly v (Prometheus parses it with strtod). */
static void shortest(char *buf, size_t len, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void emit_number(struct out *o, double v)
{
    if (isnan(v))
        emit(o, "NaN");
    else if (isinf(v))
        emit(o, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        emit(o, "%.0f", v);
    else {
        char buf[32];
        shortest(buf, sizeof(buf), v);
        emit(o, "%s", buf);
    }
}

static void emit_labels(struct out *o, const struct family *f, const struct child *c,
                        const char *extra_name, const char *extra_value)
{
    if (f->n_labels == 0 && extra_name == NULL)
        return;
    emit(o, "{");
    for (int k = 0; k < f->n_labels; k++) {
        emit(o, "%s%s=\"", k ? "," : "", f->labels[k]);
        emit_escaped(o, c->values[k], true);
        emit(o, "\"");
    }
    if (extra_name)
        emit(o, "%s%s=\"%s\"", f->n_labels ? "," : "", extra_name, extra_value);
    emit(o, "}");
}

static void emit_child(struct out *o, const struct family *f, const struct child *c)
{
    switch (f->kind) {
    case K_COUNTER:
        emit(o, "%s", f->name);
        emit_labels(o, f, c, NULL, NULL);
        emit(o, " %llu\n", (unsigned long long)c->count);
        break;
    case K_GAUGE:
        emit(o, "%s", f->name);
        emit_labels(o, f, c, NULL, NULL);
        emit(o, " ");
        emit_number(o, c->value);
        emit(o, "\n");
        break;
    case K_HISTOGRAM: {
        uint64_t cum = 0;
        for (size_t i = 0; i <= f->n_bounds; i++) {
            cum += c->buckets[i];
            char le[40];
            if (i == f->n_bounds)
                snprintf(le, sizeof(le), "+Inf");
            else
                shortest(le, sizeof(le), f->bounds[i]);
            emit(o, "%s_bucket", f->name);
            emit_labels(o, f, c, "le", le);
            emit(o, " %llu\n", (unsigned long long)cum);
        }
        emit(o, "%s_sum", f->name);
        emit_labels(o, f, c, NULL, NULL);
        emit(o, " ");
        emit_number(o, c->value);
        emit(o, "\n%s_count", f->name);
        emit_labels(o, f, c, NULL, NULL);
        emit(o, " %llu\n", (unsigned long long)c->count);
        break;
    }
    case K_GAUGE_FN:
    case K_COUNTER_FN:
        emit(o, "%s ", f->name);
        emit_number(o, f->fn(f->fn_data));
        emit(o, "\n");
        break;
    }
}

void vv_metrics_render(struct vv_metrics *m, char **out, size_t *len)
{
    struct out o = {vv_xmalloc(4096), 0, 4096};
    for (size_t i = 0; i < m->n; i++) {
        struct family *f = m->fams[i];
        static const char *const types[] = {"counter", "gauge", "histogram", "gauge", "counter"};
        emit(&o, "# HELP %s ", f->name);
        emit_escaped(&o, f->help, false);
        emit(&o, "\n# TYPE %s %s\n", f->name, types[f->kind]);
        if (f->n_labels == 0) {
            emit_child(&o, f, f->root);
            continue;
        }
        for (size_t k = 0; k < f->n_children; k++)
            emit_child(&o, f, f->children[k]);
        if (f->other)
            emit_child(&o, f, f->other);
    }
    *out = o.p;
    *len = o.len;
}
