// SPDX-License-Identifier: GPL-2.0
/*
 * bench/vm/pcshare_open.py's probe: the mean cost of open(O_RDONLY) + close
 * of one file, over N pairs, in nanoseconds.
 *
 *   bench_open_cost PATH N
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc == 3 ? atol(argv[2]) : 0;
	double t0;

	if (n <= 0) {
		fprintf(stderr, "usage: %s PATH N\n", argv[0]);
		return 2;
	}
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		int fd = open(argv[1], O_RDONLY);

		if (fd < 0) {
			perror(argv[1]);
			return 1;
		}
		close(fd);
	}
	printf("%.1f\n", (now_ns() - t0) / n);
	return 0;
}
