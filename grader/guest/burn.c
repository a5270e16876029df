// SPDX-License-Identifier: MIT
/* CPU burner: spins in user space forever, so its user time grows steadily (the monitoring target). */
#include <unistd.h>

int main(void)
{
	volatile unsigned long x = 0;

	for (;;)
		x++;
	return 0;
}
