/* bench/seccomp-build.c: libseccomp alone building the seccomp filter berth
 * hands the runtime, the part of a container start the default profile adds
 * in the runtime's init (libcontainer and runc both compile the OCI spec's
 * rules with libseccomp there, for every container). rules.h holds the
 * rules of a real container's config.json, added one name at a time as
 * libcontainer does (seccomp_syscall_resolve_name, then seccomp_rule_add or
 * seccomp_rule_add_array); bench/seccomp-build.sh writes it and builds this
 * file against the system's libseccomp or another one.
 *
 * Prints the median thread CPU time (so that other load on the machine does
 * not count) of K builds, by phase: adding the rules, exporting the BPF
 * (the same generation seccomp_load does before the kernel call), release.
 * With a second argument, also writes the BPF program to that file (to see
 * that two shapes of the rules give the same program).
 *
 *   seccomp-build [RUNS [BPF-OUT]]
 */
#include <fcntl.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "rules.h" /* arches(ctx), rules(ctx) */

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#define PHASES 4
#define MAX_K 1000

int main(int argc, char **argv)
{
	static double v[PHASES][MAX_K];
	static const char *name[PHASES] = {"add", "export", "release", "total"};
	int k, i, K = argc > 1 ? atoi(argv[1]) : 60;

	if (K < 1 || K > MAX_K) {
		fprintf(stderr, "usage: %s [RUNS 1-%d]\n", argv[0], MAX_K);
		return 2;
	}
	for (k = 0; k < K; k++) {
		double t0 = now_ms(), t1, t2, t3;
		scmp_filter_ctx c = seccomp_init(SCMP_ACT_ERRNO(1));
		int fd;

		if (c == NULL || arches(c) != 0) {
			fprintf(stderr, "seccomp_init or seccomp_arch_add failed\n");
			return 1;
		}
		if (rules(c) != 0)
			return 1;
		t1 = now_ms();
		fd = k == 0 && argc > 2 ? open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644)
					: open("/dev/null", O_WRONLY);
		if (fd < 0 || seccomp_export_bpf(c, fd) != 0) {
			fprintf(stderr, "seccomp_export_bpf failed\n");
			return 1;
		}
		close(fd);
		t2 = now_ms();
		seccomp_release(c);
		t3 = now_ms();
		v[0][k] = t1 - t0;
		v[1][k] = t2 - t1;
		v[2][k] = t3 - t2;
		v[3][k] = t3 - t0;
	}
	printf("median of %d, CPU ms:", K);
	for (i = 0; i < PHASES; i++) {
		qsort(v[i], K, sizeof(double), cmp);
		printf(" %s %.2f", name[i], v[i][K / 2]);
	}
	printf("\n");
	return 0;
}
