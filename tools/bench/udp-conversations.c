/* N one-datagram UDP conversations for `npm run bench:state` (built by tools/bench/state.ts):
 * one socket sends one 16-byte datagram to each of N distinct (address, port) destinations in
 * BASE/16 (10.200.0.0/16 from "10.200"), ports 1..65535 per address, with sendmmsg in batches
 * of 1024. Prints {"sent":N,"seconds":S}.
 *   udp-conversations BASE N */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 1024

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: udp-conversations BASE(e.g. 10.200) N\n");
		return 2;
	}
	unsigned a, b;
	if (sscanf(argv[1], "%u.%u", &a, &b) != 2) return 2;
	long n = atol(argv[2]);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	static struct sockaddr_in to[BATCH];
	static struct mmsghdr msgs[BATCH];
	static struct iovec iov;
	static char payload[16] = "kappa-bench-udp";
	iov.iov_base = payload;
	iov.iov_len = sizeof payload;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long sent = 0;
	while (sent < n) {
		int count = n - sent < BATCH ? (int)(n - sent) : BATCH;
		for (int i = 0; i < count; i++) {
			long k = sent + i;
			unsigned host = k / 65535, port = k % 65535 + 1; /* host 0..: the low 16 bits */
			to[i] = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port) };
			to[i].sin_addr.s_addr = htonl(a << 24 | b << 16 | (host & 0xffff));
			msgs[i].msg_hdr = (struct msghdr){ .msg_name = &to[i], .msg_namelen = sizeof to[i], .msg_iov = &iov, .msg_iovlen = 1 };
		}
		int done = sendmmsg(s, msgs, count, 0);
		if (done < 0) {
			if (errno == ENOBUFS || errno == EAGAIN) continue;
			fprintf(stderr, "udp-conversations: sendmmsg: %s\n", strerror(errno));
			return 1;
		}
		sent += done;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("{\"sent\":%ld,\"seconds\":%.3f}\n", sent, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
