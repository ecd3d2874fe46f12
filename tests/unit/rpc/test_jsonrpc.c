/*
 * The JSON-RPC 2.0 core without a socket: every example of the specification, id types,
 * batches, notifications, pending answers, notifications to the client, and the limits.
 */
#include "vv_test.h"

#include <jansson.h>
#include <string.h>

#include "vivim/rpc.h"

struct sink {
    char lines[64][4096];
    int n;
};

static int sink_write(void *io, const char *line, size_t len)
{
    struct sink *s = io;
    if (s->n < 64) {
        size_t n = len < 4095 ? len : 4095;
        memcpy(s->lines[s->n], line, n);
        s->lines[s->n][n] = '\0';
        s->n++;
    }
    return 0;
}

static struct vv_rpc_request *held; /* a request answered later */

static struct vv_rpc_answer subtract(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)data;
    json_t *a, *b;
    if (json_is_array(params) && json_array_size(params) == 2) {
        a = json_array_get(params, 0);
        b = json_array_get(params, 1);
    } else if (json_is_object(params)) {
        a = json_object_get(params, "minuend");
        b = json_object_get(params, "subtrahend");
    } else {
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "expected two numbers");
    }
    if (!json_is_integer(a) || !json_is_integer(b))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "expected two integers");
    return vv_rpc_reply(req, json_integer(json_integer_value(a) - json_integer_value(b)));
}

static struct vv_rpc_answer sum(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)data;
    json_int_t total = 0;
    size_t i;
    json_t *v;
    json_array_foreach(params, i, v) total += json_integer_value(v);
    return vv_rpc_reply(req, json_integer(total));
}

static struct vv_rpc_answer notify_hello(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)params;
    (void)data;
    return vv_rpc_reply(req, json_null());
}

static struct vv_rpc_answer get_data(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)params;
    (void)data;
    return vv_rpc_reply(req, json_pack("[s,i]", "hello", 5));
}

static struct vv_rpc_answer later(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)params;
    (void)data;
    held = req;
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer fails(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)params;
    (void)data;
    return vv_rpc_fail(req, VV_ENOTFOUND, "no such thing");
}

static struct vv_rpc_answer subscribe(struct vv_rpc_request *req, json_t *params, void *data)
{
    (void)params;
    (void)data;
    struct vv_rpc_conn *c = vv_rpc_request_conn(req);
    vv_rpc_notify(c, "event", json_pack("{s:i}", "n", 1));
    return vv_rpc_reply(req, json_true());
}

struct fixture {
    struct vv_rpc *rpc;
    struct vv_rpc_conn *conn;
    struct sink sink;
};

static int setup(void **state)
{
    vv_test_use_cmocka_allocator();
    struct fixture *f = test_calloc(1, sizeof(*f));
    f->rpc = vv_rpc_new(NULL);
    const struct vv_rpc_method methods[] = {
        {"subtract", subtract, NULL, "", NULL, NULL},
        {"sum", sum, NULL, "", NULL, NULL},
        {"notify_hello", notify_hello, NULL, "", NULL, NULL},
        {"get_data", get_data, NULL, "", NULL, NULL},
        {"later", later, NULL, "", NULL, NULL},
        {"fails", fails, NULL, "", NULL, NULL},
        {"subscribe", subscribe, NULL, "", NULL, NULL},
        {"update", notify_hello, NULL, "", NULL, NULL},
        {"notify_sum", notify_hello, NULL, "", NULL, NULL},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(methods); i++)
        assert_int_equal(vv_rpc_register(f->rpc, &methods[i]), 0);
    assert_int_equal(vv_rpc_register(f->rpc, &methods[0]), VV_EEXIST);
    f->conn = vv_rpc_conn_new(f->rpc, sink_write, &f->sink);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    vv_rpc_conn_close(f->conn);
    vv_rpc_free(f->rpc);
    test_free(f);
    return 0;
}

/* Sends a line; returns the concatenated output lines it caused, as JSON for comparison. */
static void expect(struct fixture *f, const char *in, const char *want)
{
    f->sink.n = 0;
    vv_rpc_conn_input(f->conn, in, strlen(in));
    if (want == NULL) {
        if (f->sink.n != 0)
            fail_msg("'%s': expected no reply, got %s", in, f->sink.lines[0]);
        return;
    }
    if (f->sink.n != 1)
        fail_msg("'%s': expected one reply line, got %d", in, f->sink.n);
    size_t len = strlen(f->sink.lines[0]);
    assert_true(len > 0 && f->sink.lines[0][len - 1] == '\n');
    json_t *got = json_loads(f->sink.lines[0], 0, NULL);
    json_t *exp = json_loads(want, 0, NULL);
    assert_non_null(exp);
    if (!json_equal(got, exp))
        fail_msg("'%s':\n got  %s\n want %s", in, f->sink.lines[0], want);
    json_decref(got);
    json_decref(exp);
}

/* For errors whose message text is the JSON parser's: the code and a null id. */
static void expect_error(struct fixture *f, const char *in, int code)
{
    f->sink.n = 0;
    vv_rpc_conn_input(f->conn, in, strlen(in));
    assert_int_equal(f->sink.n, 1);
    json_t *got = json_loads(f->sink.lines[0], 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(got, "error"), "code")),
                     code);
    assert_true(json_is_null(json_object_get(got, "id")));
    assert_string_equal(json_string_value(json_object_get(got, "jsonrpc")), "2.0");
    json_decref(got);
}

/* The examples of the JSON-RPC 2.0 specification, section 7. */
static void test_specification_examples(void **state)
{
    struct fixture *f = *state;
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42, 23], \"id\": 1}",
           "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 1}");
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [23, 42], \"id\": 2}",
           "{\"jsonrpc\": \"2.0\", \"result\": -19, \"id\": 2}");
    expect(f,
           "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": {\"subtrahend\": 23, "
           "\"minuend\": 42}, \"id\": 3}",
           "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 3}");
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": \"update\", \"params\": [1,2,3,4,5]}", NULL);
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": \"foobar\"}", NULL);
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": \"foobar\", \"id\": \"1\"}",
           "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not "
           "found\", \"data\": \"foobar\"}, \"id\": \"1\"}");
    expect_error(f, "{\"jsonrpc\": \"2.0\", \"method\": \"foobar, \"params\": \"bar\", \"baz]",
                 VV_RPC_PARSE_ERROR);
    expect_error(f,
                 "[{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": "
                 "\"1\"},{\"jsonrpc\": \"2.0\", \"method\"]",
                 VV_RPC_PARSE_ERROR);
    expect(f, "{\"jsonrpc\": \"2.0\", \"method\": 1, \"params\": \"bar\"}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"\\\"method\\\" must be a string\"},\"id\":null}");
    expect(f, "[]",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"empty batch\"},\"id\":null}");
    expect(f, "[1]",
           "[{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"a request must be an object\"},\"id\":null}]");
    const char *inv = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid "
                      "Request\",\"data\":\"a request must be an object\"},\"id\":null}";
    char three[1024];
    snprintf(three, sizeof(three), "[%s,%s,%s]", inv, inv, inv);
    expect(f, "[1,2,3]", three);
    expect(f,
           "[{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},"
           "{\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]},"
           "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42,23], \"id\": \"2\"},"
           "{\"foo\": \"boo\"},"
           "{\"jsonrpc\": \"2.0\", \"method\": \"foo.get\", \"params\": {\"name\": \"myself\"}, "
           "\"id\": \"5\"},"
           "{\"jsonrpc\": \"2.0\", \"method\": \"get_data\", \"id\": \"9\"}]",
           "[{\"jsonrpc\": \"2.0\", \"result\": 7, \"id\": \"1\"},"
           "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": \"2\"},"
           "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\", "
           "\"data\": \"\\\"jsonrpc\\\" must be \\\"2.0\\\"\"}, \"id\": null},"
           "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not "
           "found\", \"data\": \"foo.get\"}, \"id\": \"5\"},"
           "{\"jsonrpc\": \"2.0\", \"result\": [\"hello\", 5], \"id\": \"9\"}]");
    expect(f,
           "[{\"jsonrpc\": \"2.0\", \"method\": \"notify_sum\", \"params\": [1,2,4]},"
           "{\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]}]",
           NULL);
}

static void test_ids_are_echoed_with_their_type(void **state)
{
    struct fixture *f = *state;
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":null}",
           "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":null}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":2.5}",
           "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":2.5}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":9007199254740993}",
           "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":9007199254740993}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":\"\\u00e9\\n\"}",
           "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":\"\\u00e9\\n\"}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":[1]}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"\\\"id\\\" must be a string, a number or null\"},\"id\":null}");
}

static void test_invalid_members_and_params(void **state)
{
    struct fixture *f = *state;
    expect(f, "{\"jsonrpc\":\"1.0\",\"method\":\"sum\",\"id\":1}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"\\\"jsonrpc\\\" must be \\\"2.0\\\"\"},\"id\":1}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":5,\"id\":1}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"\\\"params\\\" must be an object or an array\"},\"id\":1}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[\"a\",1],\"id\":1}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"expected two "
           "integers\"},\"id\":1}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"fails\",\"id\":7}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-10004,\"message\":\"no such thing\","
           "\"data\":\"VV_ENOTFOUND\"},\"id\":7}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"fails\"}", NULL); /* notifications: silent */
    expect(f, "\"just a string\"",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"a request must be an object\"},\"id\":null}");
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1,\"extra\":true}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"unknown member in the request\"},\"id\":1}");
}

static void test_nesting_beyond_the_limit_is_refused_before_parsing(void **state)
{
    struct fixture *f = *state;
    char deep[1000];
    memset(deep, '[', 500);
    memset(deep + 500, ']', 499);
    deep[999] = '\0';
    deep[998] = ']';
    expect(f, deep,
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":\"Parse error\","
           "\"data\":\"nesting too deep\"},\"id\":null}");
    /* Brackets inside strings do not count. */
    char brackets[201];
    memset(brackets, '[', 200);
    brackets[200] = '\0';
    char in[400], want[400];
    snprintf(in, sizeof(in), "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":\"%s\"}",
             brackets);
    snprintf(want, sizeof(want), "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":\"%s\"}",
             brackets);
    expect(f, in, want);
}

/* An empty or blank line is not JSON: a parse error with id null (JSON-RPC 2.0, 4.2). */
static void test_empty_and_blank_lines_are_parse_errors(void **state)
{
    struct fixture *f = *state;
    static const char want[] = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":"
                               "\"Parse error\",\"data\":\"empty line\"},\"id\":null}";
    expect(f, "", want);
    expect(f, " \t\r", want);
}

/*
 * JSON puts no bound on numbers; one beyond what jansson holds (a 64-bit integer, a finite
 * double) is an invalid parameter of its request, answered with the request's id, not a
 * parse error with id null.
 */
static void test_numbers_out_of_range_are_invalid_params_with_the_id(void **state)
{
    struct fixture *f = *state;
    expect(f,
           "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":{\"minuend\":"
           "9223372036854775808,\"subtrahend\":1},\"id\":5}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"minuend: integer out "
           "of range (-2^63 to 2^63-1)\"},\"id\":5}");
    /* The smallest json_int_t is in range; one below it is not. */
    expect(f,
           "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[-9223372036854775808,0],"
           "\"id\":6}",
           "{\"jsonrpc\":\"2.0\",\"result\":-9223372036854775808,\"id\":6}");
    expect(f,
           "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,-9223372036854775809],"
           "\"id\":\"x\"}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"params[1]: integer "
           "out of range (-2^63 to 2^63-1)\"},\"id\":\"x\"}");
    expect(f,
           "{\"id\":7,\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":{\"a\":{\"b\":[0,"
           "1e400]}}}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"a.b[1]: number out "
           "of range\"},\"id\":7}");
    /* Digits inside strings are text; an underflowing real is just a small number. */
    expect(f,
           "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"params\":{\"s\":"
           "\"99999999999999999999\",\"t\":1e-400,\"u\":99999999999999999999},\"id\":8}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"u: integer out of "
           "range (-2^63 to 2^63-1)\"},\"id\":8}");
    /* A notification holding one is not answered; an id out of range cannot be echoed. */
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1e999]}", NULL);
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":18446744073709551616}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\","
           "\"data\":\"\\\"id\\\": number out of range\"},\"id\":null}");
    /* An unknown method is still that; a syntax error elsewhere is still a parse error. */
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"params\":[1e999],\"id\":9}",
           "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"Method not found\","
           "\"data\":\"nope\"},\"id\":9}");
    expect_error(f, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1e999,],\"id\":9}",
                 -32700);
    /* In a batch only the member holding it fails. */
    expect(f,
           "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2],\"id\":1},"
           "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[-1e999],\"id\":2}]",
           "[{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":1},{\"jsonrpc\":\"2.0\",\"error\":{"
           "\"code\":-32602,\"message\":\"params[0]: number out of range\"},\"id\":2}]");
}

static void test_pending_answer_arrives_later_and_is_dropped_after_close(void **state)
{
    struct fixture *f = *state;
    expect(f, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}", NULL);
    assert_non_null(held);
    f->sink.n = 0;
    vv_rpc_reply(held, json_string("done"));
    assert_int_equal(f->sink.n, 1);
    assert_non_null(strstr(f->sink.lines[0], "\"result\":\"done\""));

    /* A batch waits for its pending member. */
    expect(f,
           "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
           "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":2}]",
           NULL);
    f->sink.n = 0;
    vv_rpc_fail(held, VV_ETIMEDOUT, "slow");
    assert_int_equal(f->sink.n, 1);
    assert_non_null(strstr(f->sink.lines[0], "\"id\":2"));
    assert_non_null(strstr(f->sink.lines[0], "-10008"));

    /* The client goes away while a request is pending: the answer is dropped safely. */
    struct sink other = {0};
    struct vv_rpc_conn *c2 = vv_rpc_conn_new(f->rpc, sink_write, &other);
    const char *req = "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":3}";
    vv_rpc_conn_input(c2, req, strlen(req));
    vv_rpc_conn_close(c2);
    vv_rpc_reply(held, json_true());
    assert_int_equal(other.n, 0);
}

static void test_server_notifications_reach_the_client(void **state)
{
    struct fixture *f = *state;
    f->sink.n = 0;
    const char *req = "{\"jsonrpc\":\"2.0\",\"method\":\"subscribe\",\"id\":1}";
    vv_rpc_conn_input(f->conn, req, strlen(req));
    assert_int_equal(f->sink.n, 2);
    json_t *n = json_loads(f->sink.lines[0], 0, NULL);
    assert_string_equal(json_string_value(json_object_get(n, "method")), "event");
    assert_null(json_object_get(n, "id"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(n, "params"), "n")), 1);
    json_decref(n);
}

static void test_describe_lists_every_method(void **state)
{
    struct fixture *f = *state;
    json_t *doc = vv_rpc_describe(f->rpc);
    assert_int_equal(json_array_size(json_object_get(doc, "methods")), 9);
    assert_string_equal(json_string_value(json_object_get(doc, "openrpc")), "1.2.6");
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_specification_examples, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_are_echoed_with_their_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_members_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_blank_lines_are_parse_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_numbers_out_of_range_are_invalid_params_with_the_id,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_nesting_beyond_the_limit_is_refused_before_parsing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_pending_answer_arrives_later_and_is_dropped_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_notifications_reach_the_client, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_describe_lists_every_method, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
