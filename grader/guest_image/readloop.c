// SPDX-License-Identifier: MIT
/*
 * Reads FILE again and again for SECONDS without forking (far more reads than a shell loop,
 * so that a race between a reader and the shrinker gets its chances), and prints the lines
 * that hold a slab poison value (memory read after it was freed), at most 5, then
 * "reads=N" as the last line.  usage: readloop FILE SECONDS
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const poison[] = {
	"7740398493674204011",	/* 0x6b6b6b6b6b6b6b6b: POISON_FREE */
	"1802201963",		/* 0x6b6b6b6b */
	"6510615555426900570",	/* 0x5a5a5a5a5a5a5a5a: POISON_INUSE */
	"11936128518282651045",	/* 0xa5a5a5a5a5a5a5a5: POISON_END */
};

int main(int argc, char **argv)
{
	static char buf[1 << 20];
	long reads = 0, shown = 0;
	time_t end;

	if (argc < 3)
		return 2;
	end = time(NULL) + atoi(argv[2]);
	while (time(NULL) < end) {
		int fd = open(argv[1], O_RDONLY);
		ssize_t n, len = 0;

		if (fd < 0)
			return 1;
		while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
			len += n;
		close(fd);
		buf[len] = 0;
		reads++;
		for (size_t i = 0; i < sizeof(poison) / sizeof(poison[0]) && shown < 5; i++) {
			char *p = strstr(buf, poison[i]);

			if (p) {
				char *s = p, *e = strchr(p, '\n');

				while (s > buf && s[-1] != '\n')
					s--;
				printf("%.*s\n", (int)((e ? e : buf + len) - s), s);
				shown++;
			}
		}
	}
	printf("reads=%ld\n", reads);
	return 0;
}
