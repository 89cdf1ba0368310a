/* fuzz_status_request.c - libFuzzer target for the status socket's input parsers
 * (proto/status_proto.c): every input goes through the JSON request parser, as one line
 * would from a client, and through the HTTP request-head parser; a parsed request is then
 * answered with the reply builders, as the server would. Build and run: tools/fuzz_status.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/status_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  statusp_request req;
  char msg[160];
  statusp_err e = statusp_parse_request((const char *)data, size, &req, msg, sizeof msg);
  if (memchr(msg, 0, sizeof msg) == NULL) abort(); /* message always terminated */
  if (e == STATUSP_OK) {
    if (req.cmd == STATUSP_CMD_NONE || req.token_len > STATUSP_MAX_TOKEN) abort();
    if (req.cmd == STATUSP_CMD_SUBSCRIBE && !(req.interval_s >= 0.1 && req.interval_s <= 3600)) abort();
    if (req.last < 1 || req.last > STATUSP_METRICS_MAX) abort();
    char *r = statusp_reply_ok(req.cmd, req.interval_s);
    free(r);
  } else {
    char *r = statusp_reply_error(e, msg);
    free(r);
  }
  statusp_http_request hr;
  int code = statusp_http_parse((const char *)data, size, &hr);
  if (code == 0 && hr.is_metrics == hr.is_health) abort(); /* exactly one path served */
  if (hr.token_len > STATUSP_MAX_TOKEN) abort();
  if (hr.token_len) (void)statusp_token_equal(hr.token, hr.token_len, "0123456789abcdef", 16);
  return 0;
}
