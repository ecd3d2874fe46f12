/*
 * The metrics registry every module reports through.
 *
 * A registry holds metric families: counters, gauges and histograms with fixed buckets, each
 * with zero or more label names. A family with labels hands out one child per distinct label
 * value tuple; the number of children is bounded (VV_METRICS_MAX_CHILDREN): past the bound,
 * new tuples are folded into one child whose label values are all "other", and
 * vivimd_metrics_cardinality_overflow_total counts it, so a hostile peer or client can never
 * grow memory through label values.
 *
 * Names follow Prometheus conventions: base units (seconds, bytes), counters end in _total.
 * Everything runs on the loop thread; nothing here is thread-safe.
 *
 * Pointers returned by the registry live as long as the registry: modules fetch them once at
 * init and keep them.
 */
#ifndef VIVIM_METRICS_H
#define VIVIM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define VV_METRICS_MAX_CHILDREN 256 /* label tuples per family, then folded into "other" */
#define VV_METRICS_MAX_LABELS   4

struct vv_metrics;
struct vv_counter;
struct vv_gauge;
struct vv_histogram;

struct vv_metrics *vv_metrics_new(void);
void vv_metrics_free(struct vv_metrics *m);

/*
 * Families. label_names: NULL for none, or a comma-separated list such as "method,code".
 * Registering a name twice with the same kind and labels returns the existing family;
 * with a different kind or labels it aborts (a programming error).
 */
struct vv_counter *vv_metrics_counter(struct vv_metrics *m, const char *name, const char *help,
                                      const char *label_names);
struct vv_gauge *vv_metrics_gauge(struct vv_metrics *m, const char *name, const char *help,
                                  const char *label_names);
/* bounds: strictly increasing upper bounds, without +Inf (added implicitly). Copied. */
struct vv_histogram *vv_metrics_histogram(struct vv_metrics *m, const char *name, const char *help,
                                          const char *label_names, const double *bounds,
                                          size_t n_bounds);
/* A gauge whose value is read from fn at scrape time (process_*, queue lengths). */
void vv_metrics_gauge_fn(struct vv_metrics *m, const char *name, const char *help,
                         double (*fn)(void *data), void *data);
/* A counter whose value is read from fn at scrape time (process_cpu_seconds_total). */
void vv_metrics_counter_fn(struct vv_metrics *m, const char *name, const char *help,
                           double (*fn)(void *data), void *data);

/*
 * Children of labelled families: one label value per label name, in order. Values are
 * copied and escaped on output. Returns the same child for the same values.
 */
struct vv_counter *vv_counter_labels(struct vv_counter *family, const char *const *values);
struct vv_gauge *vv_gauge_labels(struct vv_gauge *family, const char *const *values);
struct vv_histogram *vv_histogram_labels(struct vv_histogram *family, const char *const *values);

/* On an unlabelled family or a child. */
void vv_counter_inc(struct vv_counter *c);
void vv_counter_add(struct vv_counter *c, uint64_t n);
uint64_t vv_counter_value(const struct vv_counter *c);
void vv_gauge_set(struct vv_gauge *g, double v);
void vv_gauge_add(struct vv_gauge *g, double delta);
double vv_gauge_value(const struct vv_gauge *g);
void vv_histogram_observe(struct vv_histogram *h, double v);

/* Prometheus text exposition format 0.0.4. *out is vv_xmalloc'd; the caller frees it. */
void vv_metrics_render(struct vv_metrics *m, char **out, size_t *len);

/* Common bucket layouts. */
extern const double vv_metrics_latency_seconds_buckets[]; /* 100 us .. 10 s */
extern const size_t vv_metrics_latency_seconds_buckets_len;

#endif
