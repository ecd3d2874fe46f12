/*
 * Logging to stderr, one line per event. The format is chosen once at start-up: journal
 * format ("<N>" priority prefix, no timestamp) when JOURNAL_STREAM says stderr is the
 * journal, human format otherwise. The level and hook are the only process-wide state in
 * vivimd: they describe the process's output, not any node's protocol state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "vivim/common.h"
#include "vivim/log.h"

#define VV_LOG_LINE_BYTES 2048 /* longer messages are truncated, never split */

static enum vv_log_level log_level = VV_LOG_INFO;
static bool log_journal;
static vv_log_hook_cb log_hook;
static void *log_hook_data;
static bool log_in_hook; /* a hook that logs must not recurse */

static const char *const level_names[] = {
    [VV_LOG_ERROR] = "error", [VV_LOG_WARN] = "warn",   [VV_LOG_NOTICE] = "notice",
    [VV_LOG_INFO] = "info",   [VV_LOG_DEBUG] = "debug",
};

void vv_log_init(void)
{
    /* JOURNAL_STREAM is "device:inode" of the journal stream systemd connected us to. */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    log_journal = false;
    if (js != NULL && fstat(2, &st) == 0) {
        unsigned long long dev, ino;
        if (sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == (unsigned long long)st.st_dev &&
            ino == (unsigned long long)st.st_ino)
            log_journal = true;
    }
}

void vv_log_set_level(enum vv_log_level level)
{
    log_level = level;
}

enum vv_log_level vv_log_get_level(void)
{
    return log_level;
}

bool vv_log_enabled(enum vv_log_level level)
{
    return level <= log_level;
}

int vv_log_parse_level(const char *s, enum vv_log_level *out)
{
    for (int l = VV_LOG_ERROR; l <= VV_LOG_DEBUG; l++) {
        if (strcmp(s, level_names[l]) == 0) {
            *out = (enum vv_log_level)l;
            return 0;
        }
    }
    return VV_EINVAL;
}

const char *vv_log_level_name(enum vv_log_level level)
{
    if (level < VV_LOG_ERROR || level > VV_LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

void vv_log_set_hook(vv_log_hook_cb cb, void *data)
{
    log_hook = cb;
    log_hook_data = data;
}

void vv_log(enum vv_log_level level, const char *module, const char *fmt, ...)
{
    if (!vv_log_enabled(level))
        return;
    char msg[VV_LOG_LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One event, one line: a newline inside a message would split it in the journal. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    char line[VV_LOG_LINE_BYTES + 128];
    if (log_journal) {
        snprintf(line, sizeof(line), "<%d>%s: %s\n", (int)level, module, msg);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-6s %s: %s\n",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, vv_log_level_name(level), module, msg);
    }
    fputs(line, stderr);
    fflush(stderr);

    if (log_hook != NULL && !log_in_hook) {
        log_in_hook = true;
        log_hook(level, module, msg, log_hook_data);
        log_in_hook = false;
    }
}
