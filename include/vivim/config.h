/*
 * vivimd's configuration: an INI file (inih) whose every section and key is documented in
 * config/vivimd.conf. Loading is strict: an unknown section or key, a malformed value or a
 * number out of range stops with "file:line: what is wrong", and so does any value start-up
 * or the peers would refuse (a listen host that is not an IP address, a socket path past
 * sun_path, a region or address longer than a hello carries): --check-config, start-up and
 * reload all load through vv_config_parse, so they cannot disagree. A loaded config is a
 * plain value: reload builds a new one and the node swaps the keys that may change at run
 * time.
 */
#ifndef VIVIM_CONFIG_H
#define VIVIM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vivim/log.h"

#define VV_CONFIG_DEFAULT_PATH "/etc/vivim/vivimd.conf"
#define VV_CONFIG_MAX_BYTES    (1024 * 1024) /* a config file larger than this is refused */
#define VV_CONFIG_ERR_BYTES    512

/*
 * A module declares its section of the file in its own folder, as a table of keys over a
 * struct of its own (see "Writing a module" in docs/architecture.md):
 *
 *     struct vv_echo_config { bool enabled; uint32_t max_bytes; };
 *     static const struct vv_config_key echo_keys[] = {
 *         VV_CONFIG_BOOL_KEY(struct vv_echo_config, enabled, "false", false, "Answer echo
 *         requests."), ...
 *     };
 *     const struct vv_config_section vv_echo_config_section = VV_CONFIG_SECTION("echo", struct
 *         vv_echo_config, echo_keys, NULL);
 *
 * The loader parses the declared default of every key through the same checks as a value
 * from the file, so a declaration cannot carry a default the file would refuse; the
 * documented default file (config/vivimd.conf) is generated from the declarations
 * (`vivimd --print-default-config`) and a test keeps the two identical.
 */
enum vv_config_type {
    VV_CONFIG_U32,  /* whole number in [min, max] */
    VV_CONFIG_BOOL, /* true, false, yes, no, on, off, 1, 0 */
    VV_CONFIG_TEXT, /* char *, checked by the key's check function if it has one */
    VV_CONFIG_ENUM, /* int: one of the key's choices, stored as its value */
};

struct vv_config_choice {
    const char *name;
    int value;
};

/* Validates a text value; on refusal writes why (without the key's name) and returns a
 * negative VV_ECONFIG_* code. */
typedef int (*vv_config_check_fn)(const char *value, char *why, size_t why_len);

struct vv_config_key {
    const char *name;
    enum vv_config_type type;
    size_t offset;     /* of the value in the section's struct */
    const char *def;   /* the default, written as in the file */
    uint32_t min, max; /* VV_CONFIG_U32 */
    bool reload;       /* SIGHUP applies a change at run time; otherwise it needs a restart */
    vv_config_check_fn check;               /* VV_CONFIG_TEXT; may be NULL */
    const struct vv_config_choice *choices; /* VV_CONFIG_ENUM, ended by {NULL, 0} */
    const char *doc;                        /* for the generated file; wrapped there */
};

#define VV_CONFIG_U32_KEY(type, field, def, min, max, reload, doc)                                 \
    {                                                                                              \
#field, VV_CONFIG_U32, offsetof(type, field), def, min, max, reload, NULL, NULL, doc       \
    }
#define VV_CONFIG_BOOL_KEY(type, field, def, reload, doc)                                          \
    {                                                                                              \
#field, VV_CONFIG_BOOL, offsetof(type, field), def, 0, 0, reload, NULL, NULL, doc          \
    }
#define VV_CONFIG_TEXT_KEY(type, field, def, check, reload, doc)                                   \
    {                                                                                              \
#field, VV_CONFIG_TEXT, offsetof(type, field), def, 0, 0, reload, check, NULL, doc         \
    }
#define VV_CONFIG_ENUM_KEY(type, field, def, choices, reload, doc)                                 \
    {                                                                                              \
#field, VV_CONFIG_ENUM, offsetof(type, field), def, 0, 0, reload, NULL, choices, doc       \
    }

/*
 * A relation between keys, checked once the whole file is read. On refusal writes why and
 * the names of the keys involved (key_b may stay NULL): the error names the later line that
 * set one of them.
 */
typedef int (*vv_config_section_check_fn)(const void *values, char *why, size_t why_len,
                                          const char **key_a, const char **key_b);

struct vv_config_section {
    const char *name; /* [name] */
    const char *doc;  /* a paragraph before the section in the generated file; may be NULL */
    size_t size;      /* of the section's struct */
    const struct vv_config_key *keys;
    size_t n_keys;
    vv_config_section_check_fn check; /* may be NULL */
};

#define VV_CONFIG_SECTION(name, doc, type, keys, check)                                            \
    {                                                                                              \
        name, doc, sizeof(type), keys, sizeof(keys) / sizeof((keys)[0]), check                     \
    }

#define VV_CONFIG_MAX_SECTIONS 32

/* The sections a program knows, in the order of the file. */
struct vv_config_schema {
    const char *preamble; /* comment at the top of the generated file; may be NULL */
    const struct vv_config_section *sections[VV_CONFIG_MAX_SECTIONS];
    size_t n_sections;
};

/* A loaded configuration: one struct per section, plus where it came from. */
struct vv_config {
    const struct vv_config_schema *schema;
    void *values[VV_CONFIG_MAX_SECTIONS]; /* values[i] belongs to schema->sections[i] */
    char *path; /* the file this was loaded from (copy), or NULL for defaults */
};

/* The values of section s; s must be in cfg's schema (anything else aborts: a build error). */
const void *vv_config_get(const struct vv_config *cfg, const struct vv_config_section *s);
/* The same, writable: for tests and fuzzers that adjust a value after loading. */
void *vv_config_get_mut(struct vv_config *cfg, const struct vv_config_section *s);

/* Fills cfg with every section's declared defaults. */
void vv_config_defaults(const struct vv_config_schema *schema, struct vv_config *cfg);

/*
 * Loads path on top of the defaults. On error returns a negative VV_ECONFIG_* code, leaves
 * *cfg holding nothing that needs freeing, and writes "path:line: message" into err.
 */
int vv_config_load(const char *path, const struct vv_config_schema *schema, struct vv_config *cfg,
                   char err[VV_CONFIG_ERR_BYTES]);

/* Parses from memory (fuzzing, tests); name is used in messages. Same contract as load. */
int vv_config_parse(const char *name, const char *text, size_t len,
                    const struct vv_config_schema *schema, struct vv_config *cfg,
                    char err[VV_CONFIG_ERR_BYTES]);

/* Writes the effective configuration as an INI file that vv_config_load accepts. */
void vv_config_print(const struct vv_config *cfg, FILE *out);
/* Writes the documented default file: the schema's preamble, each section's and key's doc
 * wrapped as comments, each key with its default. config/vivimd.conf is this output. */
void vv_config_print_defaults(const struct vv_config_schema *schema, FILE *out);

/* Calls fn(section, key, reload, arg) for every key whose value differs between a and b, in
 * the order of the key table. reload: SIGHUP applies the key at run time; when false, a
 * change takes effect only at the next start. */
typedef void (*vv_config_change_cb)(const char *section, const char *key, bool reload, void *arg);
void vv_config_diff(const struct vv_config *a, const struct vv_config *b, vv_config_change_cb fn,
                    void *arg);
/* Copies the value of every key SIGHUP may apply from src into dst (strings duplicated). */
void vv_config_apply_reloadable(struct vv_config *dst, const struct vv_config *src);

void vv_config_free(struct vv_config *cfg);

/* Checks shared by several sections' declarations (same contract as vv_config_check_fn). */
int vv_config_check_path(const char *v, char *why, size_t why_len);     /* non-empty path */
int vv_config_check_hostport(const char *v, char *why, size_t why_len); /* host:port */
/* An IP address and port as the listeners bind them (no name resolution). */
int vv_config_check_listen(const char *v, char *why, size_t why_len);
/* At most max bytes; who says who would refuse more ("peers accept"). */
int vv_config_check_max_bytes(const char *v, size_t max, const char *who, char *why,
                              size_t why_len);
/* Choices for a synchronous = normal|full key. */
enum { VV_CONFIG_SYNC_NORMAL = 0, VV_CONFIG_SYNC_FULL = 1 };
extern const struct vv_config_choice vv_config_sync_choices[];

/*
 * Splits "host:port" or "[ipv6]:port" (as validated by the loader). host receives the name
 * or address without brackets. Returns 0 or VV_EINVAL.
 */
int vv_config_split_hostport(const char *s, char *host, size_t host_len, uint16_t *port);

#endif
