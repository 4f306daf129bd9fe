/* Connection-churn generator for `npm run bench:churn` (built by tools/bench/churn.ts).
 * Every connection has its own 4-tuple for the whole run (the client binds source addresses and
 * ports in turn, never reusing one), so "one connection = one conversation" holds exactly.
 *   churn server ADDR PORT                    accept, read to EOF, close; forever
 *   churn client SRC_PREFIX FIRST_HOST HOSTS DST PORT RATE:SECONDS...
 *     SRC_PREFIX "10.77.5.", FIRST_HOST 11, HOSTS 4: sources 10.77.5.11 .. 10.77.5.14, ports
 *     1024..65535 of the first, then of the next. Each phase: connect, send 64 bytes, close, at RATE per second for
 *     SECONDS; prints one JSON line per phase: {"rate":R,"connections":N,"seconds":S}. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "churn: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct sockaddr_in address(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "churn: bad address %s\n", ip);
		exit(2);
	}
	return a;
}

static void __attribute__((noreturn)) server(const char *ip, int port)
{
	struct sockaddr_in a = address(ip, port);
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
	if (listen(s, 4096) < 0) die("listen");
	fprintf(stderr, "listening\n");
	char buf[4096];
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) continue;
		while (read(c, buf, sizeof buf) > 0) {}
		close(c);
	}
}

static int client(int argc, char **argv)
{
	const char *prefix = argv[2];
	int first = atoi(argv[3]), sources = atoi(argv[4]);
	struct sockaddr_in dst = address(argv[5], atoi(argv[6]));
	int port = 1024, source = 0;
	char payload[64], ip[64];
	memset(payload, 'k', sizeof payload);
	for (int p = 7; p < argc; p++) {
		double rate = atof(argv[p]), seconds = atof(strchr(argv[p], ':') + 1);
		long made = 0, failed = 0;
		double start = now(), elapsed = 0;
		while ((elapsed = now() - start) < seconds) {
			/* Catch up to the schedule, then sleep a little: no busy wait while ahead. */
			if (made + failed >= (long)(rate * elapsed)) {
				struct timespec pause = { 0, 200000 };
				nanosleep(&pause, NULL);
				continue;
			}
			if (port > 65535) {
				port = 1024;
				if (++source >= sources) {
					fprintf(stderr, "churn: out of distinct source tuples; raise HOSTS\n");
					exit(1);
				}
			}
			snprintf(ip, sizeof ip, "%s%d", prefix, first + source);
			struct sockaddr_in src = address(ip, port++);
			int s = socket(AF_INET, SOCK_STREAM, 0);
			if (s < 0) die("socket");
			if (bind(s, (struct sockaddr *)&src, sizeof src) < 0 || connect(s, (struct sockaddr *)&dst, sizeof dst) < 0 ||
			    write(s, payload, sizeof payload) != sizeof payload) {
				failed++;
				if (failed == 1) fprintf(stderr, "churn: %s:%d: %s\n", ip, port - 1, strerror(errno));
			} else {
				made++;
			}
			close(s);
		}
		printf("{\"rate\":%.0f,\"connections\":%ld,\"failed\":%ld,\"seconds\":%.3f}\n", rate, made, failed, elapsed);
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "server")) server(argv[2], atoi(argv[3]));
	if (argc >= 8 && !strcmp(argv[1], "client")) return client(argc, argv);
	fprintf(stderr, "usage: churn server ADDR PORT | churn client SRC_PREFIX FIRST_HOST HOSTS DST PORT RATE:SECONDS...\n");
	return 2;
}
