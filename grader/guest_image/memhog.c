// SPDX-License-Identifier: MIT
/*
 * Memory hog: allocates and touches MIB mebibytes, one page at a time, to create real memory
 * pressure (so that the kernel's shrinkers run), then holds it for SECONDS and exits.
 * usage: memhog MIB [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long mib = argc > 1 ? atol(argv[1]) : 64;
	int secs = argc > 2 ? atoi(argv[2]) : 0;
	long page = sysconf(_SC_PAGESIZE), touched = 0;

	for (long i = 0; i < mib; i++) {
		char *p = malloc(1 << 20);

		if (!p)
			break;
		for (long off = 0; off < (1 << 20); off += page)
			p[off] = (char)off;
		touched++;
	}
	printf("touched %ld MiB\n", touched);
	fflush(stdout);
	if (secs)
		sleep(secs);
	return 0;
}
