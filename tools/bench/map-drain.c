// The kernel's own cost of a capture drain: BPF_MAP_LOOKUP_AND_DELETE_BATCH over a hash map of
// capture's flow key and value sizes (48 / 216 bytes, 262 144 entries), filled with N entries,
// read 8 192 per call, timed with getrusage (user + system CPU of this process) per entry.
// Compares the flow maps' BPF_F_NO_PREALLOC with a preallocated map. Usage (root):
//   cc -O2 -o /tmp/map-drain tools/bench/map-drain.c && /tmp/map-drain 100000
#include <errno.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEY_SIZE 48
#define VALUE_SIZE 216
#define CHUNK 8192

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

static double cpu_us(void)
{
	struct rusage r;
	getrusage(RUSAGE_SELF, &r);
	return r.ru_utime.tv_sec * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_sec * 1e6 + r.ru_stime.tv_usec;
}

/* CPU µs per entry of filling the map with n entries and of draining it (median of 5 rounds). */
static void measure(int n, int flags, double *fill, double *drain)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_HASH;
	a.key_size = KEY_SIZE;
	a.value_size = VALUE_SIZE;
	a.max_entries = 262144;
	a.map_flags = flags;
	int fd = sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0) {
		perror("BPF_MAP_CREATE");
		exit(1);
	}
	char *keys = calloc(CHUNK, KEY_SIZE), *values = calloc(CHUNK, VALUE_SIZE);
	double fills[5], drains[5];
	for (int round = 0; round < 5; round++) {
		char key[KEY_SIZE] = {0}, value[VALUE_SIZE] = {0};
		double t0 = cpu_us();
		for (int i = 0; i < n; i++) {
			memcpy(key, &i, 4);
			memcpy(key + 4, &round, 4);
			memset(&a, 0, sizeof(a));
			a.map_fd = fd;
			a.key = (unsigned long)key;
			a.value = (unsigned long)value;
			a.flags = BPF_NOEXIST;
			if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a)) {
				perror("BPF_MAP_UPDATE_ELEM");
				exit(1);
			}
		}
		double t1 = cpu_us();
		long total = 0;
		__u32 in = 0, out = 0;
		for (int first = 1;; first = 0) {
			memset(&a, 0, sizeof(a));
			a.batch.map_fd = fd;
			a.batch.in_batch = first ? 0 : (unsigned long)&in;
			a.batch.out_batch = (unsigned long)&out;
			a.batch.keys = (unsigned long)keys;
			a.batch.values = (unsigned long)values;
			a.batch.count = CHUNK;
			int rc = sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &a);
			total += a.batch.count;
			in = out;
			if (rc && errno == ENOENT)
				break;
			if (rc) {
				perror("BPF_MAP_LOOKUP_AND_DELETE_BATCH");
				exit(1);
			}
		}
		if (total != n) {
			fprintf(stderr, "drained %ld of %d entries\n", total, n);
			exit(1);
		}
		fills[round] = (t1 - t0) / n;
		drains[round] = (cpu_us() - t1) / n;
	}
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++) {
			if (fills[j] < fills[i]) { double t = fills[i]; fills[i] = fills[j]; fills[j] = t; }
			if (drains[j] < drains[i]) { double t = drains[i]; drains[i] = drains[j]; drains[j] = t; }
		}
	*fill = fills[2];
	*drain = drains[2];
	close(fd);
	free(keys);
	free(values);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100000;
	double fill, drain;
	printf("| entries | map | insert (syscall), CPU µs per entry | lookup-and-delete batch, CPU µs per entry |\n| --- | --- | --- | --- |\n");
	measure(n, BPF_F_NO_PREALLOC, &fill, &drain);
	printf("| %d | BPF_F_NO_PREALLOC (capture's flow maps) | %.3f | %.3f |\n", n, fill, drain);
	measure(n, 0, &fill, &drain);
	printf("| %d | preallocated | %.3f | %.3f |\n", n, fill, drain);
	return 0;
}
