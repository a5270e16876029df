// SPDX-License-Identifier: MIT
/*
 * Runs a command so that no ordinary task (a module's kernel thread included) runs on the
 * warped guest's one CPU until it ends:
 *   - the command runs in SCHED_FIFO (priority 1): a task of the normal class cannot preempt it;
 *   - a child spins in SCHED_IDLE while it lives: when the command sleeps (rmmod waiting for an
 *     RCU grace period) the CPU never idles, and so the warped clock (QEMU -icount sleep=off)
 *     does not jump to the next timer, which may be a module thread's wake-up.
 * usage: rtrun COMMAND [ARG...]
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sched_param fifo = { .sched_priority = 1 }, idle = { .sched_priority = 0 };
	pid_t parent = getpid();

	if (argc < 2) {
		fputs("usage: rtrun COMMAND [ARG...]\n", stderr);
		return 2;
	}
	if (fork() == 0) {
		volatile unsigned long x = 0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		close(0);
		close(1);
		close(2);
		sched_setscheduler(0, SCHED_IDLE, &idle);
		for (;;)
			x++;
	}
	if (sched_setscheduler(0, SCHED_FIFO, &fifo) != 0) {
		perror("rtrun: sched_setscheduler");
		return 125;
	}
	execvp(argv[1], argv + 1);
	perror("rtrun: exec");
	return 127;
}
