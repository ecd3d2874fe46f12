/*
 * systemd's notify protocol, spoken directly (no libsystemd): one datagram per message to
 * the AF_UNIX socket named by NOTIFY_SOCKET ("@name" is the abstract namespace).
 */
#ifndef VIVIM_SD_NOTIFY_H
#define VIVIM_SD_NOTIFY_H

#include <stdint.h>

/*
 * Sends state ("READY=1", "STATUS=...", "STOPPING=1", "WATCHDOG=1", several joined by '\n').
 * Returns 1 when sent, 0 when NOTIFY_SOCKET is unset, or a negative errno.
 */
int vv_sd_notify(const char *state);

/*
 * The watchdog interval systemd expects pings within, in microseconds, or 0 when the
 * watchdog is off (WATCHDOG_USEC unset or invalid, or WATCHDOG_PID names another process).
 */
uint64_t vv_sd_watchdog_usec(void);

#endif
