/*
 * Logging: one line per event on stderr.
 *
 * When stderr is connected to the systemd journal (JOURNAL_STREAM names stderr's device and
 * inode), each line starts with a "<N>" syslog priority prefix and carries no timestamp (the
 * journal adds one). Otherwise lines are human-readable: "2026-11-24T15:04:05.123Z warn  rpc:
 * message". The level is process-wide; it can change at run time (SIGHUP reload).
 */
#ifndef VIVIM_LOG_H
#define VIVIM_LOG_H

#include <stdbool.h>

/* Values are syslog priorities, so they double as journal prefixes. */
enum vv_log_level {
    VV_LOG_ERROR = 3,
    VV_LOG_WARN = 4,
    VV_LOG_NOTICE = 5,
    VV_LOG_INFO = 6,
    VV_LOG_DEBUG = 7,
};

/* Looks at the environment to pick journal or human format. Safe to call more than once. */
void vv_log_init(void);
void vv_log_set_level(enum vv_log_level level);
enum vv_log_level vv_log_get_level(void);
/* "error", "warn", "notice", "info", "debug". Returns 0 or VV_EINVAL. */
int vv_log_parse_level(const char *s, enum vv_log_level *out);
const char *vv_log_level_name(enum vv_log_level level);
bool vv_log_enabled(enum vv_log_level level);

/*
 * A hook that sees every line written (after the level filter), e.g. to forward warnings as
 * monitor events. At most one; NULL removes it. Called on the thread that logged.
 */
typedef void (*vv_log_hook_cb)(enum vv_log_level level, const char *module, const char *msg,
                               void *data);
void vv_log_set_hook(vv_log_hook_cb cb, void *data);

void vv_log(enum vv_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define vv_log_error(mod, ...)  vv_log(VV_LOG_ERROR, mod, __VA_ARGS__)
#define vv_log_warn(mod, ...)   vv_log(VV_LOG_WARN, mod, __VA_ARGS__)
#define vv_log_notice(mod, ...) vv_log(VV_LOG_NOTICE, mod, __VA_ARGS__)
#define vv_log_info(mod, ...)   vv_log(VV_LOG_INFO, mod, __VA_ARGS__)
#define vv_log_debug(mod, ...)                                                                     \
    do {                                                                                           \
        if (vv_log_enabled(VV_LOG_DEBUG))                                                          \
            vv_log(VV_LOG_DEBUG, mod, __VA_ARGS__);                                                \
    } while (0)

#endif
