/* The log benchmarks' writer (bench/suite.sh section 5, bench/logs.sh):
 * BYTES bytes of 128-byte lines (127 bytes + \n) to stdout through stdio's
 * default buffering, as a program that prints lines would. Built static, so
 * it runs in the busybox rootfs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
	unsigned long long bytes = argc > 1 ? strtoull(argv[1], 0, 10) : 0, i;
	char line[128];
	memset(line, 'x', sizeof line - 1);
	line[sizeof line - 1] = '\n';
	for (i = 0; i < bytes / sizeof line; i++) {
		line[i % 100] = 'a' + i % 26;
		if (fwrite(line, sizeof line, 1, stdout) != 1) return 1;
		line[i % 100] = 'x';
	}
	return fflush(stdout) == 0 ? 0 : 1;
}
