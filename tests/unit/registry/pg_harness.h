/*
 * A throwaway PostgreSQL server for tests: initdb into a temporary directory, pg_ctl start
 * on a private Unix socket in that directory (no TCP), trust authentication, stopped and
 * removed at the end. PostgreSQL refuses to run as root, so as root the server runs as the
 * `postgres` user that Debian's package creates. Blocking calls: tests only.
 */
#ifndef VV_PG_HARNESS_H
#define VV_PG_HARNESS_H

#include <glob.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pg_harness {
    char dir[64];
    char bin[256];
    char url[256];
    char as_user[64]; /* "runuser -u postgres -- " or "" */
};

/* Runs one command (already formatted) as the server's user, logging to the harness log. */
static inline int pg_harness_run(struct pg_harness *h, const char *command)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s%s >>%s/harness.log 2>&1", h->as_user, command, h->dir);
    return system(cmd);
}

/* Returns 0 when a server is up; -1 when PostgreSQL is not installed or did not start. */
static inline int pg_harness_start(struct pg_harness *h)
{
    memset(h, 0, sizeof(*h));
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0)
        return -1;
    snprintf(h->bin, sizeof(h->bin), "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    *strrchr(h->bin, '/') = '\0';
    strcpy(h->dir, "/tmp/vv-pg-XXXXXX");
    if (mkdtemp(h->dir) == NULL)
        return -1;
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL || chown(h->dir, pw->pw_uid, pw->pw_gid) != 0)
            return -1;
        snprintf(h->as_user, sizeof(h->as_user), "runuser -u postgres -- ");
    }
    chmod(h->dir, 0777);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/initdb -D %s/data --auth=trust -U postgres -E UTF8 --no-sync",
             h->bin, h->dir);
    if (pg_harness_run(h, cmd) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "%s/pg_ctl -D %s/data -w -l %s/pg.log -o \"-c listen_addresses= -k %s -p 5432\" "
             "start",
             h->bin, h->dir, h->dir, h->dir);
    if (pg_harness_run(h, cmd) != 0)
        return -1;
    snprintf(h->url, sizeof(h->url), "postgresql:///postgres?host=%s&port=5432&user=postgres",
             h->dir);
    return 0;
}

static inline int pg_harness_restart(struct pg_harness *h)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/pg_ctl -D %s/data -w -m fast restart", h->bin, h->dir);
    return pg_harness_run(h, cmd);
}

static inline void pg_harness_stop(struct pg_harness *h)
{
    if (h->dir[0] == '\0')
        return;
    char stop[512];
    snprintf(stop, sizeof(stop), "%s/pg_ctl -D %s/data -w -m fast stop", h->bin, h->dir);
    pg_harness_run(h, stop);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", h->dir);
}

#endif
