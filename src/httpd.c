// SPDX-License-Identifier: GPL-2.0
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "httpd.h"
#include "util.h"

/* Prometheus scrapes once per interval: a few clients at a time is plenty. */
#define HTTPD_CONNECTIONS 32
#define HTTPD_TIMEOUT_S 10
/* Request line and headers must fit; a bigger request gets 431. */
#define HTTPD_CONNECTION_MEMORY (32u << 10)

struct httpd {
	struct MHD_Daemon *mhd;
	int fd;
	pthread_mutex_t lock;
	char *text;    /* NULL until the first report */
	size_t len;
};

static const char content_type[] = "text/plain; version=0.0.4; charset=utf-8";

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
			     size_t len, enum MHD_ResponseMemoryMode mode, const char *type)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_size, void **state)
{
	static const char not_found[] = "not found: dupcache serves /metrics\n";
	static const char not_allowed[] = "method not allowed: GET or HEAD\n";
	static const char no_report[] = "no report yet\n";
	struct httpd *h = cls;
	enum MHD_Result ret;

	(void)version, (void)upload, (void)upload_size, (void)state;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof(not_allowed) - 1,
			     MHD_RESPMEM_PERSISTENT, "text/plain");
	if (strcmp(url, "/metrics"))
		return reply(c, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1,
			     MHD_RESPMEM_PERSISTENT, "text/plain");
	pthread_mutex_lock(&h->lock);
	if (h->text)
		ret = reply(c, MHD_HTTP_OK, h->text, h->len, MHD_RESPMEM_MUST_COPY, content_type);
	else
		ret = reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, no_report, sizeof(no_report) - 1,
			    MHD_RESPMEM_PERSISTENT, "text/plain");
	pthread_mutex_unlock(&h->lock);
	return ret;
}

int httpd_parse_listen(const char *listen, void *ss, unsigned *socklen)
{
	memset(ss, 0, sizeof(struct sockaddr_storage));
	const char *port = listen, *colon = strrchr(listen, ':');
	char host[256] = "127.0.0.1";
	char *end;
	long p;

	if (colon) {
		const char *a = listen;
		size_t n = (size_t)(colon - listen);

		port = colon + 1;
		if (n >= 2 && a[0] == '[' && a[n - 1] == ']') {
			a++;
			n -= 2;
		} else if (memchr(a, ':', n)) {
			msg("daemon: --listen %s: an IPv6 address goes in brackets: [ADDR]:PORT", listen);
			return -1;
		}
		if (n >= sizeof(host)) {
			msg("daemon: --listen %s: not ADDR:PORT", listen);
			return -1;
		}
		if (n) {
			memcpy(host, a, n);
			host[n] = '\0';
		}
	}
	p = strtol(port, &end, 10);
	if (!*port || *end || p < 1 || p > 65535) {
		msg("daemon: --listen %s: '%s' is not a port (1 to 65535)", listen, port);
		return -1;
	}
	/* inet_pton, not getaddrinfo: "1.2.3" is no address here, whatever inet_aton says. */
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)p);
		*socklen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)p);
		*socklen = sizeof(struct sockaddr_in6);
	} else {
		msg("daemon: --listen %s: '%s' is not a numeric IPv4 or IPv6 address", listen, host);
		return -1;
	}
	return 0;
}

int httpd_start(const char *listen_addr, struct httpd **out)
{
	struct sockaddr_storage ss;
	unsigned len;
	struct httpd *h;
	int one = 1, fd;

	if (httpd_parse_listen(listen_addr, &ss, &len))
		return EXIT_USAGE;
	/* Our own socket: a bind error is said as such (libmicrohttpd only returns NULL). */
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 64)) {
		msg("daemon: cannot listen on %s: %s", listen_addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_FAIL;
	}
	h = xcalloc(1, sizeof(*h));
	h->fd = fd;
	pthread_mutex_init(&h->lock, NULL);
	h->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
				  (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, handle, h,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTPD_CONNECTIONS,
				  MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTPD_CONNECTIONS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPD_TIMEOUT_S,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTPD_CONNECTION_MEMORY,
				  MHD_OPTION_END);
	if (!h->mhd) {
		msg("daemon: cannot start the HTTP server on %s", listen_addr);
		close(fd);
		pthread_mutex_destroy(&h->lock);
		free(h);
		return EXIT_FAIL;
	}
	*out = h;
	return EXIT_OK;
}

void httpd_publish(struct httpd *h, const char *text, size_t len)
{
	char *copy = xcalloc(len + 1, 1);

	memcpy(copy, text, len);
	pthread_mutex_lock(&h->lock);
	free(h->text);
	h->text = copy;
	h->len = len;
	pthread_mutex_unlock(&h->lock);
}

void httpd_stop(struct httpd *h)
{
	if (!h)
		return;
	/* Quiesced first: the listening socket is ours to close, not libmicrohttpd's. */
	MHD_quiesce_daemon(h->mhd);
	MHD_stop_daemon(h->mhd);
	close(h->fd);
	pthread_mutex_destroy(&h->lock);
	free(h->text);
	free(h);
}
