// SPDX-License-Identifier: MIT
/*
 * Guest agent: PID 1 of the grading guest once /init has mounted the pseudo file systems.
 *
 * It talks to the host over a serial port that is NOT the kernel console, so that the
 * commands' output never mixes with the kernel log. Protocol (binary-safe, lengths first):
 *
 *   guest -> host   "READY <release>\n" once at start
 *   host  -> guest  "RUN <id> <timeout_ms> <nbytes>\n" then nbytes of /bin/sh script
 *   guest -> host   "RES <id> <status> <elapsed_ms> <flags> <outlen> <errlen>\n" out err
 *                   flags: bit 0 timed out, bit 1 killed but unkillable (D state),
 *                          bit 2 output truncated
 *   host  -> guest  "OFF 0 0 0\n" powers the guest off
 *
 * Each command runs in its own session so that a timeout kills its whole process group.
 * Output is capped so that a flooding module cannot exhaust the guest or the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define OUT_CAP (1024 * 1024)

static int port;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			_exit(3);
		}
		buf += n;
		len -= (size_t)n;
	}
}

static int read_line(char *buf, size_t cap)
{
	size_t i = 0;

	while (i + 1 < cap) {
		char c;
		ssize_t n = read(port, &c, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		if (c == '\n')
			break;
		buf[i++] = c;
	}
	buf[i] = 0;
	return (int)i;
}

static int read_exact(char *buf, size_t len)
{
	while (len) {
		ssize_t n = read(port, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

struct sink {
	int fd;
	char *buf;
	size_t len;
	int truncated;
};

/* Reads what is available; returns 0 on EOF, 1 otherwise. */
static int drain(struct sink *s)
{
	char tmp[8192];
	ssize_t n = read(s->fd, tmp, sizeof(tmp));

	if (n < 0)
		return (errno == EINTR || errno == EAGAIN) ? 1 : 0;
	if (n == 0)
		return 0;
	if (s->len + (size_t)n > OUT_CAP) {
		s->truncated = 1;
		n = (ssize_t)(OUT_CAP - s->len);
	}
	memcpy(s->buf + s->len, tmp, (size_t)n);
	s->len += (size_t)n;
	return 1;
}

static void reap_others(pid_t keep, int *keep_status, int *keep_done)
{
	int st;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		if (p == keep) {
			*keep_status = st;
			*keep_done = 1;
		}
	}
}

static void run(const char *id, long timeout_ms, char *script)
{
	static char outbuf[OUT_CAP], errbuf[OUT_CAP];
	struct sink out = { .buf = outbuf }, err = { .buf = errbuf };
	int po[2], pe[2], status = 0, done = 0, flags = 0, open_fds = 2;
	long long start = now_ms(), deadline = start + timeout_ms, killed_at = 0;
	pid_t pid;
	char hdr[160];

	if (pipe(po) || pipe(pe))
		_exit(4);
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		int fd = open("/proc/self/oom_score_adj", O_WRONLY);

		if (fd >= 0) {
			if (write(fd, "0", 1) < 0)
				perror("oom_score_adj");
			close(fd);
		}
		setsid();
		dup2(devnull, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]); close(pe[0]); close(po[1]); close(pe[1]); close(port);
		signal(SIGCHLD, SIG_DFL);
		execl("/bin/sh", "sh", "-c", script, (char *)NULL);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	out.fd = po[0];
	err.fd = pe[0];
	fcntl(out.fd, F_SETFL, O_NONBLOCK);
	fcntl(err.fd, F_SETFL, O_NONBLOCK);

	for (;;) {
		struct pollfd fds[2] = { { out.fd, POLLIN, 0 }, { err.fd, POLLIN, 0 } };
		long long t = now_ms();
		int wait = 50;

		reap_others(pid, &status, &done);
		/*
		 * The command is over when its shell has exited and the pipes are drained or no
		 * longer written: a background child ("burn &") may keep them open forever.
		 */
		if (done && (open_fds == 0 || poll(fds, 2, 0) == 0))
			break;
		if (!killed_at && t >= deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			flags |= 1;
			killed_at = t;
		}
		if (killed_at && !done && t - killed_at > 2000) {
			flags |= 2; /* stuck in the kernel: leave it, stay responsive */
			status = -1;
			break;
		}
		if (open_fds == 0) {
			usleep(20000);
			continue;
		}
		if (poll(fds, 2, wait) > 0) {
			if (out.fd >= 0 && (fds[0].revents & (POLLIN | POLLHUP)) && !drain(&out)) {
				close(out.fd);
				out.fd = -1;
				open_fds--;
			}
			if (err.fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP)) && !drain(&err)) {
				close(err.fd);
				err.fd = -1;
				open_fds--;
			}
		}
	}
	if (out.fd >= 0)
		close(out.fd);
	if (err.fd >= 0)
		close(err.fd);
	if (out.truncated || err.truncated)
		flags |= 4;
	if (status != -1)
		status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	snprintf(hdr, sizeof(hdr), "RES %s %d %lld %d %zu %zu\n", id, status,
		 now_ms() - start, flags, out.len, err.len);
	write_all(port, hdr, strlen(hdr));
	write_all(port, out.buf, out.len);
	write_all(port, err.buf, err.len);
}

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "/dev/ttyS1";
	struct termios tio;
	struct utsname u;
	char line[256], hello[128];
	int fd;

	/* Best effort: the OOM killer should pick the memory hog, never the agent. */
	fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "-1000", 5) < 0)
			perror("oom_score_adj");
		close(fd);
	}
	port = open(dev, O_RDWR | O_NOCTTY);
	if (port < 0) {
		perror(dev);
		return 1;
	}
	if (tcgetattr(port, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetspeed(&tio, B115200);
		tcsetattr(port, TCSANOW, &tio);
	}
	uname(&u);
	snprintf(hello, sizeof(hello), "READY %s\n", u.release);
	write_all(port, hello, strlen(hello));

	for (;;) {
		char verb[8], id[32];
		long timeout_ms;
		size_t n;
		char *script;

		if (read_line(line, sizeof(line)) < 0) {
			sleep(1);
			continue;
		}
		if (sscanf(line, "%7s %31s %ld %zu", verb, id, &timeout_ms, &n) != 4)
			continue;
		if (!strcmp(verb, "OFF")) {
			sync();
			reboot(RB_POWER_OFF);
		}
		if (strcmp(verb, "RUN") || n > 1024 * 1024)
			continue;
		script = malloc(n + 1);
		if (!script || read_exact(script, n) < 0)
			_exit(5);
		script[n] = 0;
		run(id, timeout_ms, script);
		free(script);
	}
}
