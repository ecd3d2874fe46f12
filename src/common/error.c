/* Messages and names for the codes in vivim/error.h, libuv's and errno's. */
#include <uv.h>

#include "vivim/error.h"

const char *vv_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define VV__ERR_MSG(name, value, msg)                                                              \
    case value:                                                                                    \
        return msg;
        VV_ERRORS(VV__ERR_MSG)
#undef VV__ERR_MSG
    default:
        break;
    }
    if (code < 0 && code > -10000)
        return uv_strerror(code);
    return "unknown error";
}

const char *vv_err_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
#define VV__ERR_NAME(name, value, msg)                                                             \
    case value:                                                                                    \
        return #name;
        VV_ERRORS(VV__ERR_NAME)
#undef VV__ERR_NAME
    default:
        break;
    }
    if (code < 0 && code > -10000)
        return uv_err_name(code);
    return "UNKNOWN";
}
