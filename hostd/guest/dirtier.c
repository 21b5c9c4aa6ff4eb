/*
 * Shoal test guest workload: dirties R MB/s of a private buffer and prints an
 * uptime counter once a second, so that a test can check that the guest kept
 * running across a live migration.
 *
 * Output (one line a second on stdout, the serial console):
 *   shoal-uptime <seconds> rate <R MB/s> dirtied <total MB>
 * Input (lines on stdin, the serial console):
 *   rate <R>   set the dirty rate to R MB/s (0 stops dirtying)
 * The initial rate comes from `shoal.dirty=R` on the kernel command line,
 * else from argv[1], else 5. The buffer size is `shoal.buf=MB` (default 32).
 *
 * Built statically by build.sh; no other dependency than libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define TICK_MS 50

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Value of `key=` on the kernel command line, or -1. */
static long cmdline_param(const char *key) {
  char buf[4096];
  FILE *f = fopen("/proc/cmdline", "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strstr(buf, key);
  if (!p) return -1;
  p += strlen(key);
  char *end = NULL;
  long v = strtol(p, &end, 10);
  if (end == p || v < 0) return -1;
  return v;
}

int main(int argc, char **argv) {
  long rate = cmdline_param("shoal.dirty=");
  if (rate < 0 && argc > 1) rate = strtol(argv[1], NULL, 10);
  if (rate < 0) rate = 5;
  long buf_mb = cmdline_param("shoal.buf=");
  if (buf_mb <= 0) buf_mb = 32;
  size_t size = (size_t)buf_mb << 20;
  size_t pages = size / PAGE;
  unsigned char *mem = malloc(size);
  if (!mem) {
    printf("shoal-dirtier: cannot allocate %ld MB\n", buf_mb);
    fflush(stdout);
    for (;;) pause();
  }
  memset(mem, 1, size);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("shoal-dirtier: buffer %ld MB, rate %ld MB/s\n", buf_mb, rate);

  double start = now_s();
  double last_print = start;
  double credit = 0.0; /* pages owed */
  double last = start;
  size_t next = 0;
  unsigned long long dirtied_pages = 0;
  unsigned char stamp = 2;
  char line[256];
  size_t line_len = 0;

  for (;;) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    int r = poll(&pfd, 1, TICK_MS);
    if (r > 0 && (pfd.revents & POLLIN)) {
      char c;
      ssize_t got;
      while ((got = read(0, &c, 1)) == 1) {
        if (c == '\n' || c == '\r') {
          line[line_len] = 0;
          long v;
          if (sscanf(line, "rate %ld", &v) == 1 && v >= 0) {
            rate = v;
            printf("shoal-dirtier: rate %ld MB/s\n", rate);
          }
          line_len = 0;
          break;
        } else if (line_len + 1 < sizeof(line)) {
          line[line_len++] = c;
        }
      }
    }
    double t = now_s();
    credit += (t - last) * (double)rate * (double)(1UL << 20) / (double)PAGE;
    last = t;
    /* Do not build up a backlog larger than one second. */
    double cap = (double)rate * (double)(1UL << 20) / (double)PAGE;
    if (credit > cap) credit = cap;
    while (credit >= 1.0) {
      mem[next * PAGE] = stamp;
      next++;
      if (next == pages) {
        next = 0;
        stamp = (unsigned char)(stamp == 255 ? 2 : stamp + 1);
      }
      credit -= 1.0;
      dirtied_pages++;
    }
    if (t - last_print >= 1.0) {
      last_print = t;
      printf("shoal-uptime %ld rate %ld dirtied %llu\n", (long)(t - start), rate,
             dirtied_pages * PAGE >> 20);
    }
  }
}
