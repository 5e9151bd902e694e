/* sysprobe: makes one syscall that a seccomp profile or a flag decides, and
 * prints its outcome, for the security e2e tests (tests/e2e/tests/security.rs).
 * Built static by the test: the busybox rootfs has no libc.
 *
 *   sysprobe add_key   add a key to the process keyring   -> "ok" or "errno N"
 *   sysprobe keyctl    look up the session keyring         -> "ok" or "errno N"
 *   sysprobe euid      print the effective uid
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long r) {
	if (r < 0) {
		printf("errno %d\n", errno);
		return 1;
	}
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: sysprobe add_key|keyctl|euid\n");
		return 2;
	}
	if (strcmp(argv[1], "add_key") == 0)
		/* KEY_SPEC_PROCESS_KEYRING is -2 */
		return report(syscall(SYS_add_key, "user", "berth-probe", "x", 1, -2));
	if (strcmp(argv[1], "keyctl") == 0)
		/* KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), creating it */
		return report(syscall(SYS_keyctl, 0, -3, 1));
	if (strcmp(argv[1], "euid") == 0) {
		printf("%d\n", (int)geteuid());
		return 0;
	}
	fprintf(stderr, "sysprobe: unknown probe %s\n", argv[1]);
	return 2;
}
