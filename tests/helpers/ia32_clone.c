// SPDX-License-Identifier: GPL-2.0
/*
 * ia32_clone SRC DST: FICLONE through the 32-bit syscall entry (int $0x80
 * from a 64-bit process: the kernel runs it as a compat syscall, with its
 * own numbers and registers), so tests see what a 32-bit program does.
 * ia32_clone --probe: exit 0 if this kernel runs 32-bit syscalls at all
 * (one that has no 32-bit entry kills the process with SIGSEGV).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/fs.h>

#define NR32_IOCTL 54
#define NR32_GETPID 20

int main(int argc, char **argv)
{
	int src, dst;
	long ret;

	if (argc == 2 && !strcmp(argv[1], "--probe")) {
		asm volatile("int $0x80" : "=a"(ret) : "a"(NR32_GETPID) : "memory");
		return ret == getpid() ? 0 : 1;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: ia32_clone SRC DST\n");
		return 2;
	}
	src = open(argv[1], O_RDONLY);
	dst = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (src < 0 || dst < 0) {
		perror("open");
		return 1;
	}
	asm volatile("int $0x80"
		     : "=a"(ret)
		     : "a"(NR32_IOCTL), "b"(dst), "c"(FICLONE), "d"(src)
		     : "memory");
	if (ret < 0) {
		fprintf(stderr, "ia32 ioctl(FICLONE): error %ld\n", -ret);
		return 1;
	}
	return 0;
}
