/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The daemon's /metrics endpoint (libmicrohttpd, one internal thread): it
 * serves the last text published, nothing else.  Bounded: a connection
 * limit, a per-connection memory limit (a request with huge headers is
 * refused with 431) and an idle timeout, so that no client can make it grow.
 */
#ifndef DUPCACHE_HTTPD_H
#define DUPCACHE_HTTPD_H

#include <stddef.h>

struct httpd;

/*
 * ADDR:PORT, [V6ADDR]:PORT, :PORT or PORT (then 127.0.0.1).  EXIT_OK and
 * *out, or EXIT_USAGE (not an address) / EXIT_FAIL (cannot listen) after a
 * one-line message.  Start it with the caller's signals blocked: the
 * server's thread inherits the mask.
 */
int httpd_start(const char *listen, struct httpd **out);
/* Replace the text served at /metrics (copied). */
void httpd_publish(struct httpd *h, const char *text, size_t len);
void httpd_stop(struct httpd *h);

/* Parse only (for option checks): 0, or -1 after a one-line message. */
int httpd_parse_listen(const char *listen, void *sockaddr_storage, unsigned *socklen);

#endif
