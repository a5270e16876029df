// SPDX-License-Identifier: MIT
/*
 * CPU burner, the monitoring target: its user time grows while it spins.
 *   burn          spins forever (100 % of a CPU)
 *   burn PERCENT  spins PERCENT ms of every 100 ms of the guest's clock and sleeps the rest;
 *                 SIGUSR1 makes it spin all the time, SIGUSR2 goes back to PERCENT.
 * In the time-warped guest (QEMU -icount sleep=off) idle time costs no wall time, so a burner
 * that sleeps most of the time lets guest seconds pass quickly while its user time still grows;
 * a check that needs the user time to grow fast signals it.
 */
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t full;

static void on_signal(int sig)
{
	full = sig == SIGUSR1;
}

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
	volatile unsigned long x = 0;
	long percent = argc > 1 ? atol(argv[1]) : 100;

	signal(SIGUSR1, on_signal);
	signal(SIGUSR2, on_signal);
	if (percent >= 100 || percent <= 0)
		full = 1;
	for (;;) {
		long long end = now_us() + percent * 1000;

		while (full || now_us() < end)
			x++;
		if (percent < 100)
			usleep((useconds_t)(100 - percent) * 1000);
	}
	return 0;
}
