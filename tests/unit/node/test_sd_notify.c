/* The systemd notify protocol against a real datagram socket, as systemd would listen. */
#include "vv_test.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vivim/sd_notify.h"

static int listen_dgram(const char *name, bool abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    if (abstract)
        sa.sun_path[0] = '\0';
    if (bind(fd, (struct sockaddr *)&sa,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) != 0)
        return -1;
    return fd;
}

static void test_messages_arrive_on_path_and_abstract_sockets(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/vv-notify-%d.sock", getpid());
    unlink(path);
    int fd = listen_dgram(path, false);
    assert_true(fd >= 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(vv_sd_notify("READY=1\nSTATUS=running"), 1);
    char buf[128] = {0};
    assert_int_equal(recv(fd, buf, sizeof(buf) - 1, 0), 22);
    assert_string_equal(buf, "READY=1\nSTATUS=running");
    close(fd);
    unlink(path);

    char abstract[64];
    snprintf(abstract, sizeof(abstract), "@vv-notify-%d", getpid());
    fd = listen_dgram(abstract, true);
    assert_true(fd >= 0);
    setenv("NOTIFY_SOCKET", abstract, 1);
    assert_int_equal(vv_sd_notify("STOPPING=1"), 1);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(recv(fd, buf, sizeof(buf) - 1, 0), 10);
    assert_string_equal(buf, "STOPPING=1");
    close(fd);
}

static void test_no_socket_is_not_an_error_and_bad_socket_is(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(vv_sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_true(vv_sd_notify("READY=1") < 0);
    setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock", 1);
    assert_true(vv_sd_notify("READY=1") < 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_interval_respects_pid(void **state)
{
    (void)state;
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(vv_sd_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "3000000", 1);
    assert_int_equal(vv_sd_watchdog_usec(), 3000000);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(vv_sd_watchdog_usec(), 3000000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    assert_int_equal(vv_sd_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "soon", 1);
    assert_int_equal(vv_sd_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_arrive_on_path_and_abstract_sockets),
        cmocka_unit_test(test_no_socket_is_not_an_error_and_bad_socket_is),
        cmocka_unit_test(test_watchdog_interval_respects_pid),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
