/*
 * Fuzz target: the configuration loader. Any byte string is a possible config file; the
 * loader must return 0 or a VV_ECONFIG_* code with a "name:line: message" error, never
 * crash, leak or read out of bounds. The schema is vivimd's: every module's section.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/config.h"
#include "vivim/node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    int rc =
        vv_config_parse("fuzz.conf", (const char *)data, size, vv_node_config_schema(), &cfg, err);
    if (rc == 0) {
        vv_config_free(&cfg);
    } else if (strncmp(err, "fuzz.conf:", 10) != 0) {
        abort(); /* every error must name the file and line */
    }
    return 0;
}
