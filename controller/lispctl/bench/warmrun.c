/* Warm-path driver for the BPF_PROG_TEST_RUN benchmark (bench_datapath_prog).
 *
 * Runs one loaded program back to back, one bpf(BPF_PROG_TEST_RUN, repeat=1)
 * call per packet, and prints the kernel's durations. Nothing runs between
 * two calls but this loop, so what the program touches (its maps, the
 * neighbours) stays in the CPU's caches as it would on a router busy
 * forwarding; the Python driver touches much memory between runs and gives
 * cold-ish figures instead. Compiled by the benchmark with cc at run time.
 *
 *   warmrun PROG_FD RUNS FRAMES_FILE
 *
 * PROG_FD: a program fd inherited from the caller. FRAMES_FILE: records of
 * u32 data length, u32 context length (host order), the data, the context
 * (empty: none). Run i takes record i % count, after one untimed pass over
 * all of them. The process stays on the CPU it started on (per-CPU maps and
 * caches). Output, one `key value...` per line:
 *   runs N
 *   total_ns T        sum of the kernel's per-run durations
 *   median_ns M       their median (robust to a run preempted on a busy machine)
 *   block_median_ns B the median of the means of blocks of BLOCK consecutive runs
 *                     (all runs one block when fewer): the mean's resolution, the
 *                     median's robustness (see the function block_median)
 *   retval R COUNT    per program return value seen
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct frame {
    uint32_t len, ctx_len;
    unsigned char *data, *ctx;
};

#define MAX_RETVALS 16
#define BLOCK 100

static int die(const char *what)
{
    fprintf(stderr, "warmrun: %s: %s\n", what, strerror(errno));
    return 1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The kernel's per-run durations come in steps of the clock (10 ns on some
 * VMs), so a median of single runs moves by whole steps, 14% of a 70 ns
 * program; a mean over many runs resolves below a step (runs fall at every
 * phase of the clock) but takes in whatever lands in a run: an interrupt or
 * the hypervisor taking the CPU away, microseconds each. The median of block
 * means keeps the first and drops the second, as long as fewer than half the
 * blocks are disturbed. Call before sorting `dur`. */
static double block_median(const uint32_t *dur, unsigned long long runs)
{
    if (!runs)
        return 0;
    unsigned long long len = runs < BLOCK ? runs : BLOCK, n = runs / len;
    double *mean = malloc(n * sizeof(*mean));
    if (!mean)
        return -1;
    for (unsigned long long b = 0; b < n; b++) {
        unsigned long long sum = 0;
        for (unsigned long long j = 0; j < len; j++)
            sum += dur[b * len + j];
        mean[b] = (double)sum / len;
    }
    qsort(mean, n, sizeof(*mean), cmp_double);
    double m = n % 2 ? mean[n / 2] : (mean[n / 2 - 1] + mean[n / 2]) / 2;
    free(mean);
    return m;
}

static int read_frames(const char *path, struct frame **out, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = 0, cap = 0;
    struct frame *v = NULL;
    uint32_t hdr[2];
    while (fread(hdr, sizeof(hdr), 1, f) == 1) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            struct frame *nv = realloc(v, cap * sizeof(*v));
            if (!nv)
                return -1;
            v = nv;
        }
        struct frame *fr = &v[n];
        fr->len = hdr[0];
        fr->ctx_len = hdr[1];
        fr->data = malloc(fr->len ? fr->len : 1);
        fr->ctx = malloc(fr->ctx_len ? fr->ctx_len : 1);
        if (!fr->data || !fr->ctx || fread(fr->data, 1, fr->len, f) != fr->len ||
            fread(fr->ctx, 1, fr->ctx_len, f) != fr->ctx_len) {
            errno = EINVAL;
            return -1;
        }
        n++;
    }
    fclose(f);
    *out = v;
    *count = n;
    return n ? 0 : (errno = EINVAL, -1);
}

static int run_once(int fd, const struct frame *fr, unsigned char *out, uint32_t out_len,
                    uint32_t *retval, uint32_t *duration)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.test.prog_fd = fd;
    attr.test.data_in = (uint64_t)(uintptr_t)fr->data;
    attr.test.data_size_in = fr->len;
    attr.test.data_out = (uint64_t)(uintptr_t)out;
    attr.test.data_size_out = out_len;
    attr.test.repeat = 1;
    if (fr->ctx_len) {
        attr.test.ctx_in = (uint64_t)(uintptr_t)fr->ctx;
        attr.test.ctx_size_in = fr->ctx_len;
    }
    if (syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr)))
        return -1;
    *retval = attr.test.retval;
    *duration = attr.test.duration;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: warmrun PROG_FD RUNS FRAMES_FILE\n");
        return 2;
    }
    int fd = atoi(argv[1]);
    unsigned long long runs = strtoull(argv[2], NULL, 10);
    struct frame *frames;
    size_t count;
    if (read_frames(argv[3], &frames, &count))
        return die("frames file");
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);    /* best effort */
    }
    uint32_t out_len = 0;
    for (size_t i = 0; i < count; i++)
        if (frames[i].len + 4096 > out_len)
            out_len = frames[i].len + 4096;
    unsigned char *out = malloc(out_len);
    if (!out)
        return die("malloc");
    uint32_t retval, duration;
    for (size_t i = 0; i < count; i++)      /* untimed: fills caches, flow and next-hop slots */
        if (run_once(fd, &frames[i], out, out_len, &retval, &duration))
            return die("BPF_PROG_TEST_RUN");
    uint32_t *dur = malloc((runs ? runs : 1) * sizeof(*dur));
    if (!dur)
        return die("malloc");
    uint32_t rv[MAX_RETVALS];
    unsigned long long rv_n[MAX_RETVALS];
    int nrv = 0;
    unsigned long long total = 0;
    for (unsigned long long i = 0; i < runs; i++) {
        if (run_once(fd, &frames[i % count], out, out_len, &retval, &duration))
            return die("BPF_PROG_TEST_RUN");
        total += duration;
        dur[i] = duration;
        int k = 0;
        while (k < nrv && rv[k] != retval)
            k++;
        if (k == nrv && nrv < MAX_RETVALS) {
            rv[k] = retval;
            rv_n[k] = 0;
            nrv++;
        }
        if (k < nrv)
            rv_n[k]++;
    }
    double blocks = block_median(dur, runs);
    if (blocks < 0)
        return die("malloc");
    qsort(dur, runs, sizeof(*dur), cmp_u32);
    printf("runs %llu\ntotal_ns %llu\nmedian_ns %u\nblock_median_ns %.2f\n", runs, total,
           runs ? dur[runs / 2] : 0, blocks);
    for (int k = 0; k < nrv; k++)
        printf("retval %u %llu\n", rv[k], rv_n[k]);
    return 0;
}
